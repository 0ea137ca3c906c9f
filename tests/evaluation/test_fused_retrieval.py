"""Fused retrieval: full scoring equals the embedding path, rerank touches only the top-k."""

import pytest
import torch
import torch.nn.functional as F

from mmresearch.evaluation.fused_retrieval import candidate_pairs, fused_retrieval
from mmresearch.evaluation.retrieval import retrieval_metrics


def _data(n_img=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n_img, 8, generator=g), dim=-1)
    t2i = torch.arange(n_img).repeat_interleave(3)
    txt = F.normalize(img[t2i] + 0.9 * torch.randn(len(t2i), 8, generator=g), dim=-1)
    return img, txt, t2i


def test_full_scoring_equals_embedding_metrics():
    img, txt, t2i = _data()
    calls = []

    def score(i, t):
        calls.append(len(i))
        return (img[i] * txt[t]).sum(-1)

    result = fused_retrieval(score, len(img), t2i, first_stage=None, batch_size=7)
    assert result.pairs_scored == len(img) * len(t2i) == sum(calls)
    expected = retrieval_metrics(img, txt, t2i)
    assert result.metrics == pytest.approx(expected)
    assert result.first_stage_metrics is None


def test_rerank_scores_only_candidates_and_ranks_them_first():
    img, txt, t2i = _data()
    first = txt @ img.T
    t2i_mask, i2t_mask = candidate_pairs(first, top_k=3)
    assert int(t2i_mask.sum(1).max()) == 3 and int(i2t_mask.sum(0).max()) == 3
    seen = torch.zeros_like(t2i_mask)

    def perfect(i, t):  # an oracle fusion: 1 for true pairs, 0 otherwise
        seen[t, i] = True
        return (t2i[t] == i).float()

    result = fused_retrieval(perfect, len(img), t2i, first_stage=first, top_k=3, batch_size=5)
    assert bool((seen == (t2i_mask | i2t_mask)).all())  # exactly the union of the candidates
    assert result.pairs_scored == int((t2i_mask | i2t_mask).sum())
    # where the true image is a candidate, the oracle puts it first
    hit = t2i_mask[torch.arange(len(t2i)), t2i].float().mean()
    assert result.metrics["t2i_R@1"] == pytest.approx(float(hit))
    assert result.first_stage_metrics == pytest.approx(retrieval_metrics(img, txt, t2i))
    assert result.metrics["t2i_R@1"] >= result.first_stage_metrics["t2i_R@1"]


def test_shards_sum_to_the_single_process_scores():
    img, txt, t2i = _data()
    score = lambda i, t: (img[i] * txt[t]).sum(-1)  # noqa: E731
    parts = []

    def keep(t):
        parts.append(t.clone())
        return t

    for rank in range(3):
        fused_retrieval(score, len(img), t2i, batch_size=10, shard=(rank, 3), reduce=keep)
    single = fused_retrieval(score, len(img), t2i, batch_size=10)
    total = sum(parts)
    expected = txt @ img.T
    assert torch.allclose(total, expected, atol=1e-6)
    assert single.metrics == pytest.approx(retrieval_metrics(img, txt, t2i))


def test_too_many_pairs_without_first_stage_is_refused():
    img, txt, t2i = _data()
    with pytest.raises(ValueError, match="first stage"):
        fused_retrieval(lambda i, t: torch.zeros(len(i)), len(img), t2i, max_full_pairs=10)
