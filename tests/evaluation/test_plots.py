"""Evaluation figures: shapes of the layouts, the correct/incorrect marks, PNG output."""

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox
from matplotlib.patches import Rectangle

from mmresearch.evaluation import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _images(n, size=16, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _unit(n, e, seed):
    return torch.nn.functional.normalize(torch.randn(n, e, generator=torch.Generator().manual_seed(seed)), dim=1)


def _assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


# ---- marking logic ---------------------------------------------------------------------------


def test_top_k_matches_marks_correct_items_and_ranks_ties_against_the_query():
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.8, 0.1], [0.4, 0.3, 0.2, 0.1]])
    mask = torch.tensor([[False, False, True, False], [False, True, False, False], [False, False, False, False]])
    top = plots.top_k_matches(sim, k=3, true_mask=mask)
    assert top.indices.tolist() == [[0, 2, 3], [1, 2, 0], [0, 1, 2]]
    np.testing.assert_allclose(top.scores[0], [0.9, 0.5, 0.3], rtol=1e-6)
    assert top.correct.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    # row 1: the true item ties with an irrelevant one -> counted against the query (rank 2)
    assert top.true_rank.tolist() == [2, 2, 0]
    no_truth = plots.top_k_matches(sim, k=10)
    assert no_truth.indices.shape == (3, 4) and no_truth.correct is None and no_truth.true_rank is None


def test_true_index_to_mask_ignores_negative_indices():
    mask = plots.true_index_to_mask(torch.tensor([2, -1, 0]), 3)
    assert mask.tolist() == [[False, False, True], [False, False, False], [True, False, False]]


def test_wrap_text_limits_lines_and_marks_the_cut():
    text = "a big green square on the right and a large diamond in blue on the left"
    wrapped = plots.wrap_text(text, 20, 2)
    lines = wrapped.split("\n")
    assert len(lines) == 2 and all(len(line) <= 20 for line in lines) and lines[-1].endswith("\u2026")
    assert plots.wrap_text("short caption", 20, 2) == "short caption"


# ---- figures ---------------------------------------------------------------------------------


def test_similarity_heatmap_outlines_the_true_pairs(tmp_path):
    sim = _unit(6, 8, 0) @ _unit(6, 8, 1).T
    captions = [f"caption number {i} of a rather long description that needs wrapping" for i in range(6)]
    fig = plots.similarity_heatmap(sim, [f"image {i}" for i in range(6)], captions)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap + colourbar
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_gid() == "true-pair"]
    assert sorted((int(b.get_x() + 0.5), int(b.get_y() + 0.5)) for b in boxes) == [(i, i) for i in range(6)]
    assert all("\n" in t.get_text() for t in fig.axes[0].get_xticklabels())  # wrapped captions

    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[0, 1] = mask[3, 5] = True
    fig = plots.similarity_heatmap(sim[:4].numpy(), list("abcd"), None, true_mask=mask, row_images=_images(4))
    boxes = [p for p in fig.axes[0].patches if p.get_gid() == "true-pair"]
    assert sorted((int(b.get_x() + 0.5), int(b.get_y() + 0.5)) for b in boxes) == [(1, 0), (5, 3)]
    assert sum(isinstance(a, AnnotationBbox) for a in fig.axes[0].artists) == 4  # thumbnails
    path = plots.save_figure(fig, tmp_path / "heat.png")
    _assert_png(path)


def test_similarity_heatmap_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="row labels"):
        plots.similarity_heatmap(torch.zeros(3, 3), ["a", "b"])


def test_text_to_image_grid_frames_true_images_green_and_others_red(tmp_path):
    images = _images(10)
    sim = _unit(3, 8, 2) @ _unit(10, 8, 3).T
    true_index = torch.tensor([int(sim[0].argmax()), 7, -1])
    fig = plots.text_to_image_grid(["a red circle", "two blue squares " * 6, "nothing"], images, sim, true_index, k=5)
    assert len(fig.axes) == 3 * 6  # one text panel + 5 images per query
    expected = plots.top_k_matches(sim, 5, plots.true_index_to_mask(true_index, 10)).correct
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 15
    marks = np.array([ax.get_gid() == "match" for ax in image_axes]).reshape(3, 5)
    assert (marks == expected).all() and marks[0, 0]  # query 0's best image is its true image
    for ax, ok in zip(image_axes, expected.reshape(-1)):
        assert ax.get_gid() == ("match" if ok else "miss")
        assert ax.spines["left"].get_edgecolor() == to_rgba(plots.MATCH_COLOUR if ok else plots.MISS_COLOUR)
    _assert_png(plots.save_figure(fig, tmp_path / "t2i.png"))

    # a [Q, N] mask works too; k larger than the gallery is clipped; no truth -> no marks
    fig = plots.text_to_image_grid(["x", "y", "z"], images[:3], sim[:, :3], torch.eye(3, dtype=torch.bool), k=5)
    assert sum(1 for ax in fig.axes if ax.images) == 9
    fig = plots.text_to_image_grid(["x", "y", "z"], images, sim, None, k=2)
    assert all(ax.get_gid() is None for ax in fig.axes)


def test_image_to_text_grid_marks_true_captions(tmp_path):
    images = _images(4)
    captions = [f"caption {t} " + "with many words " * (t % 5) for t in range(20)]
    text_image = torch.arange(4).repeat_interleave(5)
    sim = _unit(4, 8, 4) @ _unit(20, 8, 5).T
    mask = text_image[None, :] == torch.arange(4)[:, None]
    fig = plots.image_to_text_grid(images, captions, sim, mask, k=5, query_labels=[f"image {i}" for i in range(4)])
    assert len(fig.axes) == 4 * 2  # image + caption panel per query
    expected = plots.top_k_matches(sim, 5, mask).correct
    for r, tax in enumerate(fig.axes[1::2]):
        score_lines = [t for t in tax.texts if t.get_text().lstrip("\u2713\u2717 ").startswith("#")]
        assert len(score_lines) == 5
        marks = [t.get_gid() == "match" for t in score_lines]
        assert marks == expected[r].tolist()
        assert all(t.get_text().startswith(plots.CHECK if ok else plots.CROSS) for t, ok in zip(score_lines, marks))
    _assert_png(plots.save_figure(fig, tmp_path / "i2t.png"))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_projection_has_one_legend_entry_per_present_class(tmp_path, method):
    emb = _unit(40, 12, 6)
    labels = torch.arange(40) % 3  # classes 0..2 of 4
    fig = plots.embedding_projection(emb, labels, ["circle", "square", "triangle", "cross"], "test", method=method)
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["circle (14)", "square (13)", "triangle (13)"]
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 40
    _assert_png(plots.save_figure(fig, tmp_path / f"{method}.png"))


def test_projection_is_deterministic_and_colour_classes_use_their_colour():
    emb = _unit(30, 8, 7)
    for method in ("pca", "tsne"):
        a, _ = plots.project_2d(emb, method)
        b, _ = plots.project_2d(emb.numpy(), method)
        assert a.shape == (30, 2) and np.allclose(a, b)
    _, ratio = plots.project_2d(emb, "pca")
    assert 0 < ratio[1] <= ratio[0] <= 1
    fig = plots.embedding_projection(emb, torch.tensor([0, 1] * 15), ["red", "blue"], "colours")
    faces = [tuple(c.get_facecolor()[0][:3]) for c in fig.axes[0].collections]
    assert faces == [to_rgba("red")[:3], to_rgba("blue")[:3]]
    with pytest.raises(ValueError, match="method"):
        plots.project_2d(emb, "umap")


def test_save_figure_creates_folders_and_releases_the_figure(tmp_path):
    fig = plots.embedding_projection(np.random.default_rng(0).normal(size=(10, 4)), np.zeros(10), ["all"])
    path = plots.save_figure(fig, str(tmp_path / "a" / "b" / "proj.png"))
    assert path == tmp_path / "a" / "b" / "proj.png"
    _assert_png(path)
    assert len(fig.axes) == 0
