"""The retrieval metrics are exact: equal to a brute-force pessimistic ranking, and to torchmetrics.

Two references:

- ``_pessimistic_reference``: a tiny pure-python ranking straight from the definition (sort
  every query's items by score, relevant items after irrelevant ones at equal scores). It is well
  defined with ties, so it checks heavy ties, duplicated images and captions.
- ``_torchmetrics_reference``: torchmetrics' per-query classes (the slow, trusted path). They
  break ties by sort order, so they are only compared on tie-free inputs.

Tie tests use embeddings quantised to multiples of 1/2 in few dimensions: every score is a
multiple of 1/4 computed exactly in float32 whatever the summation order, so ours, the reference
(float64) and torchmetrics see bit-identical scores.
"""

import functools

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP, RetrievalMRR

import mmresearch.evaluation.retrieval as retrieval
from mmresearch.evaluation.retrieval import ranks_from_scores, retrieval_metrics

RECALL_KEYS = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]


@pytest.fixture(autouse=True)
def _one_thread():
    """The inputs are tiny: a second thread only adds wake-up latency (large on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _torchmetrics_reference(img: torch.Tensor, txt: torch.Tensor, t2i: torch.Tensor) -> dict:
    # torchmetrics' MRR/MAP treat relevant items with a score <= 0 as not retrieved, and cast
    # scores to float32: the scores are shifted to be positive, exactly (checked) in float32.
    sims = img @ txt.T + 3.0
    assert torch.equal(sims - 3.0, img @ txt.T), "use grid embeddings: the shift must be exact"
    rel = t2i[None, :] == torch.arange(img.shape[0])[:, None]
    out = {}
    for direction, s, r in (("i2t", sims, rel), ("t2i", sims.T, rel.T)):
        idx = torch.arange(s.shape[0])[:, None].expand_as(s).flatten()
        for k in (1, 5, 10):
            out[f"{direction}_R@{k}"] = float(RetrievalHitRate(top_k=k)(s.flatten(), r.flatten(), indexes=idx))
        out[f"{direction}_MRR"] = float(RetrievalMRR()(s.flatten(), r.flatten(), indexes=idx))
        out[f"{direction}_mAP"] = float(RetrievalMAP()(s.flatten(), r.flatten(), indexes=idx))
    return out


def _relevant_ties(sims: torch.Tensor, t2i: torch.Tensor) -> int:
    """How many (relevant, irrelevant) pairs of a query tie, over both directions."""
    rel = t2i[None, :] == torch.arange(sims.shape[0])[:, None]
    ties = 0
    for s, r in ((sims, rel), (sims.T, rel.T)):
        eq = s[:, :, None] == s[:, None, :]  # [Q, M, M]
        ties += int((eq & r[:, :, None] & ~r[:, None, :]).sum())
    return ties


def _grid(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Round to multiples of 2**-bits: small dot products of such vectors are exact in float32."""
    return torch.round(x * 2**bits) / 2**bits


def _pessimistic_query(scores: list, relevant: list) -> tuple:
    """(1-based position of the first relevant item, average precision) of one query."""
    order = sorted(range(len(scores)), key=lambda x: (-scores[x], relevant[x]))  # ties: relevant last
    positions = [p + 1 for p, x in enumerate(order) if relevant[x]]
    return positions[0], sum(j / p for j, p in enumerate(positions, 1)) / len(positions)


def _pessimistic_reference(sims: torch.Tensor, t2i: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """Metrics from the definition, on the score matrix ``sims [N_i, N_t]`` (NaN counts as -inf)."""
    sims = torch.nan_to_num(sims.double(), nan=float("-inf"))
    rel = t2i[None, :] == torch.arange(sims.shape[0])[:, None]
    out = {}
    for direction, s, r in (("i2t", sims, rel), ("t2i", sims.T, rel.T)):
        firsts, aps = zip(*(_pessimistic_query(row, rrow) for row, rrow in zip(s.tolist(), r.tolist())))
        for k in ks:
            out[f"{direction}_R@{k}"] = sum(f <= k for f in firsts) / len(firsts)
        out[f"{direction}_MRR"] = sum(1 / f for f in firsts) / len(firsts)
        out[f"{direction}_mAP"] = sum(aps) / len(aps)
    out["rsum"] = sum(out[k] for k in RECALL_KEYS)
    return out


def _assert_close(ours: dict, ref: dict, abs_tol: float = 1e-9) -> None:
    assert set(ref) <= set(ours)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=abs_tol), key


def _uneven_captions(g: torch.Generator, n_img: int) -> torch.Tensor:
    per_image = torch.randint(1, 8, (n_img,), generator=g)  # 1 to 7 captions per image (COCO has 5-7)
    t2i = torch.repeat_interleave(torch.arange(n_img), per_image)
    return t2i[torch.randperm(t2i.numel(), generator=g)]


def _tied_inputs(seed: int, n_img: int = 30, dim: int = 4):
    """Quantised embeddings (multiples of 1/2, so exact scores) with many ties, duplicated
    images and duplicated captions; captions are noisy copies of their image."""
    g = torch.Generator().manual_seed(seed)
    t2i = _uneven_captions(g, n_img)
    img = torch.randint(-2, 3, (n_img, dim), generator=g).float() / 2
    img[1::5] = img[0::5][: img[1::5].shape[0]]  # identical images
    txt = img[t2i].clone()
    noise = torch.rand(txt.shape, generator=g) < 0.4
    txt[noise] = torch.randint(-2, 3, (int(noise.sum()),), generator=g).float() / 2
    txt[3::11] = txt[2::11][: txt[3::11].shape[0]]  # identical captions (of other images, mostly)
    return img, txt, t2i


@functools.lru_cache(maxsize=None)
def _tie_free_case(seed: int):
    """Grid embeddings without relevant/irrelevant ties, and torchmetrics' metrics on them."""
    g = torch.Generator().manual_seed(seed)
    n_img = 40
    t2i = _uneven_captions(g, n_img)
    img = _grid(F.normalize(torch.randn(n_img, 16, generator=g), dim=-1))
    # captions near their image so that the metrics are far from 0 and from 1
    txt = _grid(F.normalize(img[t2i] + 1.2 * torch.randn(t2i.numel(), 16, generator=g), dim=-1))
    assert torch.equal((img @ txt.T).double(), img.double() @ txt.double().T)  # exact scores
    assert _relevant_ties(img @ txt.T, t2i) == 0  # torchmetrics is only well defined without ties
    return img, txt, t2i, _torchmetrics_reference(img, txt, t2i)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [None, 7, 1])
def test_matches_torchmetrics_with_uneven_captions(seed, chunk):
    img, txt, t2i, ref = _tie_free_case(seed)
    ours = retrieval_metrics(img, txt, t2i, chunk_size=chunk)
    _assert_close(ours, ref, abs_tol=1e-6)  # torchmetrics computes in float32
    assert 0.05 < ours["t2i_R@1"] < 0.95
    assert ours["rsum"] == pytest.approx(sum(ours[k] for k in RECALL_KEYS))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pessimistic_reference_matches_torchmetrics_without_ties(seed):
    """The brute-force reference used for the tie tests agrees with torchmetrics where both are defined."""
    img, txt, t2i, ref = _tie_free_case(seed)
    _assert_close(_pessimistic_reference(img @ txt.T, t2i), ref, abs_tol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("chunk", [None, 7, 1])
def test_matches_pessimistic_reference_with_heavy_ties(seed, chunk):
    img, txt, t2i = _tied_inputs(seed)
    sims = img.double() @ txt.double().T
    assert torch.equal((img @ txt.T).double(), sims)  # exact scores: no rounding anywhere
    ref = _pessimistic_reference(sims, t2i)
    ours = retrieval_metrics(img, txt, t2i, chunk_size=chunk)
    _assert_close(ours, ref)
    # the inputs really are adversarial: many relevant items tie with irrelevant ones
    assert _relevant_ties(sims, t2i) > 100


def test_duplicated_image_ties_against_the_query():
    """An exact copy of an image ties with it: every caption of either ranks second in t2i."""
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    img[5] = img[4]
    t2i = torch.arange(6).repeat_interleave(2)
    m = retrieval_metrics(img, img[t2i], t2i)
    assert m["t2i_R@1"] == pytest.approx(8 / 12)
    # the copy's captions score as high as its own: 2 irrelevant captions above its 2 relevant ones
    assert m["i2t_R@1"] == pytest.approx(4 / 6)
    assert m["i2t_mAP"] == pytest.approx((4 + 2 * (1 / 3 + 2 / 4) / 2) / 6)
    _assert_close(m, _pessimistic_reference(img @ img[t2i].T, t2i))


def test_chunk_size_does_not_change_the_metrics():
    img, txt, t2i = _tied_inputs(7, n_img=50)
    ref = retrieval_metrics(img, txt, t2i, chunk_size=None)
    _assert_close(ref, _pessimistic_reference(img.double() @ txt.double().T, t2i))
    for chunk in (1, 37, 10_000):  # one row, ragged last chunks, oversized
        assert retrieval_metrics(img, txt, t2i, chunk_size=chunk) == ref


def test_memory_is_bounded_by_chunk_size(monkeypatch):
    """No score matrix larger than chunk_size x max(N_i, N_t) is ever computed."""
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(30, 8, generator=g), dim=-1)
    t2i = _uneven_captions(g, 30)
    txt = F.normalize(img[t2i] + torch.randn(t2i.numel(), 8, generator=g), dim=-1)
    shapes = []
    mm = torch.mm

    def spy(a, b, **kwargs):
        shapes.append((a.shape[0], b.shape[1]))
        return mm(a, b, **kwargs)

    monkeypatch.setattr(torch, "mm", spy)
    ref = retrieval_metrics(img, txt, t2i, chunk_size=None)
    assert shapes == [(t2i.numel(), 30), (30, t2i.numel())]  # one product per direction
    shapes.clear()
    assert retrieval_metrics(img, txt, t2i, chunk_size=8) == ref
    assert max(rows * cols for rows, cols in shapes) <= 8 * t2i.numel()
    assert max(rows for rows, cols in shapes if cols == t2i.numel()) == 8  # image queries: chunk_size
    assert sum(rows for rows, cols in shapes if cols == 30) == t2i.numel()  # every caption once
    assert sum(rows for rows, cols in shapes if cols == t2i.numel()) == 30  # every image once


def _ranks_reference(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Per relevant item: how many irrelevant items of its row score >= it (-1 at the padding)."""
    out = torch.full(relevant.shape, -1, dtype=torch.long)
    for row in range(scores.shape[0]):
        irrelevant = torch.ones(scores.shape[1], dtype=torch.bool)
        irrelevant[relevant[row][relevant[row] >= 0]] = False
        for p, c in enumerate(relevant[row].tolist()):
            if c >= 0:
                out[row, p] = int(((scores[row] >= scores[row, c]) & irrelevant).sum())
    return out


@pytest.mark.parametrize("few_candidates", [True, False])
def test_ranks_from_scores_both_counting_paths(monkeypatch, few_candidates):
    g = torch.Generator().manual_seed(3)
    n_rows, n_items, n_rel = 12, 1500, 4
    scores = torch.randint(0, 8, (n_rows, n_items), generator=g).float()  # heavy ties
    relevant = torch.stack([torch.randperm(n_items, generator=g)[:n_rel] for _ in range(n_rows)])
    relevant[::3, 2:] = -1  # uneven numbers of relevant items
    relevant[1, 1:] = -1
    if few_candidates:  # relevant items near the top; a few irrelevant ones tie with them
        top = torch.randint(9, 12, relevant.shape, generator=g).float()
        scores.scatter_(1, relevant.clamp_min(0), torch.where(relevant >= 0, top, scores.gather(1, relevant.clamp_min(0))))
        scores[:, :3] = 10.0
    passes = []
    count_ge = retrieval._count_ge
    monkeypatch.setattr(retrieval, "_count_ge", lambda *a: passes.append(1) or count_ge(*a))
    got = ranks_from_scores(scores, relevant)
    assert torch.equal(got, _ranks_reference(scores, relevant))
    assert (len(passes) == 1) == few_candidates  # one comparison pass, or one per relevant slot


def test_count_ge_over_many_words():
    """The packed boolean count is exact across word groups, padding and full rows."""
    g = torch.Generator().manual_seed(0)
    for n_items in (1, 7, 8, 1023, 1024, 1025, 3 * 1024 + 5):
        scores = torch.randn(5, n_items, generator=g)
        scores[0] = 1.0  # a full row: every byte lane of every group at its maximum
        thresholds = torch.tensor([[0.5], [0.0], [float("inf")], [float("-inf")], [-0.3]])
        workspace = retrieval._mask_workspace(5, n_items, scores.device)
        got = retrieval._count_ge(scores, thresholds, workspace)
        assert torch.equal(got, (scores >= thresholds).sum(1)), n_items


def test_nan_embeddings_are_never_lucky():
    """NaN scores count as -inf: a diverged model scores like a collapsed one, not perfectly."""
    img = torch.full((10, 4), float("nan"))
    t2i = torch.arange(10).repeat_interleave(2)
    m = retrieval_metrics(img, torch.randn(20, 4), t2i)
    assert m["t2i_R@1"] == 0.0 and m["i2t_R@1"] == 0.0 and m["i2t_MRR"] < 0.1
    _assert_close(m, _pessimistic_reference(torch.full((10, 20), float("nan")), t2i))
    img = torch.eye(10)
    img[3] = float("nan")  # one bad image (and its captions): only their scores drop
    txt = img[t2i]
    ref = _pessimistic_reference(img @ txt.T, t2i)
    _assert_close(retrieval_metrics(img, txt, t2i, chunk_size=3), ref)
    assert ref["t2i_R@1"] == pytest.approx(18 / 20)


def test_perfect_embeddings_score_one():
    img = torch.eye(6)
    t2i = torch.arange(6).repeat_interleave(3)
    m = retrieval_metrics(img, img[t2i], t2i)
    assert all(m[f"{d}_{k}"] == 1.0 for d in ("i2t", "t2i") for k in ("R@1", "MRR", "mAP"))
    assert m["rsum"] == 6.0


def test_constant_embeddings_are_never_lucky():
    """Ties count against the query: collapsed embeddings must not score R@1 = 1."""
    img = torch.ones(20, 4)
    t2i = torch.arange(20).repeat_interleave(2)
    m = retrieval_metrics(img, torch.ones(40, 4), t2i)
    assert m["t2i_R@1"] == 0.0 and m["i2t_R@1"] == 0.0
    assert m["t2i_R@10"] == 0.0
    _assert_close(m, _pessimistic_reference(torch.full((20, 40), 4.0), t2i))


def test_tie_between_positive_and_negative_counts_against_query():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # images 0 and 1 identical
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t2i = torch.tensor([0, 1, 2])
    m = retrieval_metrics(img, txt, t2i)
    assert m["t2i_R@1"] == pytest.approx(1 / 3)  # captions 0 and 1 tie with the other image: rank 2
    assert m["t2i_MRR"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert m["t2i_R@5"] == 1.0


def test_rejects_images_without_captions():
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(torch.eye(3), torch.eye(3)[:2], torch.tensor([0, 1]))


def test_from_scores_equals_from_embeddings():
    g = torch.Generator().manual_seed(3)
    img = torch.nn.functional.normalize(torch.randn(9, 6, generator=g), dim=-1)
    t2i = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 8])
    txt = torch.nn.functional.normalize(img[t2i] + 0.8 * torch.randn(13, 6, generator=g), dim=-1)
    from mmresearch.evaluation.retrieval import retrieval_metrics_from_scores

    sims = txt @ img.T
    assert retrieval_metrics_from_scores(sims, sims.T.contiguous(), t2i) == retrieval_metrics(img, txt, t2i)
