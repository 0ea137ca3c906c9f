"""The retrieval metrics agree with torchmetrics' per-query classes (the slow, trusted path)."""

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP, RetrievalMRR

from mmresearch.evaluation.retrieval import retrieval_metrics


def _torchmetrics_reference(img: torch.Tensor, txt: torch.Tensor, t2i: torch.Tensor) -> dict:
    # torchmetrics' MRR/MAP treat relevant items with a score <= 0 as not retrieved, so the
    # scores are shifted (rank-preserving) to be positive.
    sims = (img @ txt.T).double() + 3.0  # same float32 scores as ours, shifted exactly
    rel = t2i[None, :] == torch.arange(img.shape[0])[:, None]
    out = {}
    for direction, s, r in (("i2t", sims, rel), ("t2i", sims.T, rel.T)):
        idx = torch.arange(s.shape[0])[:, None].expand_as(s).flatten()
        for k in (1, 5, 10):
            out[f"{direction}_R@{k}"] = float(RetrievalHitRate(top_k=k)(s.flatten(), r.flatten(), indexes=idx))
        out[f"{direction}_MRR"] = float(RetrievalMRR()(s.flatten(), r.flatten(), indexes=idx))
        out[f"{direction}_mAP"] = float(RetrievalMAP()(s.flatten(), r.flatten(), indexes=idx))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [None, 7])
def test_matches_torchmetrics_with_uneven_captions(seed, chunk):
    g = torch.Generator().manual_seed(seed)
    n_img = 40
    per_image = torch.randint(1, 8, (n_img,), generator=g)  # 1 to 7 captions per image (COCO has 5-7)
    t2i = torch.repeat_interleave(torch.arange(n_img), per_image)
    t2i = t2i[torch.randperm(t2i.numel(), generator=g)]
    img = F.normalize(torch.randn(n_img, 16, generator=g), dim=-1)
    # captions near their image so that the metrics are far from 0 and from 1
    txt = F.normalize(img[t2i] + 1.2 * torch.randn(t2i.numel(), 16, generator=g), dim=-1)
    ours = retrieval_metrics(img, txt, t2i, chunk_size=chunk)
    ref = _torchmetrics_reference(img, txt, t2i)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-5), key
    assert 0.05 < ours["t2i_R@1"] < 0.95
    assert ours["rsum"] == pytest.approx(sum(ours[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))


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
