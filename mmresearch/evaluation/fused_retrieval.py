"""Retrieval with a fused (cross-modal) scorer: every candidate pair goes through the fusion model.

Full scoring of ``N_t x N_i`` pairs is allowed for small sets. For larger ones a first stage (a
dual encoder's or the model's own embeddings) picks, for every caption, its ``top_k`` images and,
for every image, its ``top_k`` captions; only the union of those pairs is fused, in batches.
Ranking: a query's fused candidates rank above its other items, which keep their first-stage
order (the ALBEF/BLIP protocol), so R@K for K <= top_k is decided by the fused scores alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from mmresearch.evaluation.retrieval import retrieval_metrics_from_scores

PairScorer = Callable[[Tensor, Tensor], Tensor]  # (image rows [P], text rows [P]) -> scores [P]


@dataclass
class FusedRetrievalResult:
    """Metrics after fusion (and of the first stage alone when there is one) and the pairs fused."""

    metrics: Dict[str, float]
    first_stage_metrics: Optional[Dict[str, float]]
    pairs_scored: int


def candidate_pairs(first_stage: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """Boolean candidate masks from first-stage scores ``[N_t, N_i]``: ``(t2i [N_t, N_i],
    i2t [N_t, N_i])`` where ``t2i[t, i]`` is True when image ``i`` is among caption ``t``'s
    ``top_k`` and ``i2t[t, i]`` when caption ``t`` is among image ``i``'s ``top_k``."""
    n_txt, n_img = first_stage.shape
    t2i = torch.zeros_like(first_stage, dtype=torch.bool)
    t2i.scatter_(1, first_stage.topk(min(top_k, n_img), dim=1).indices, True)
    i2t = torch.zeros_like(first_stage, dtype=torch.bool)
    i2t.scatter_(0, first_stage.topk(min(top_k, n_txt), dim=0).indices, True)
    return t2i, i2t


def fused_retrieval(
    score_pairs: PairScorer,
    num_images: int,
    text_to_image: Tensor,
    first_stage: Optional[Tensor] = None,
    top_k: int = 16,
    batch_size: int = 256,
    max_full_pairs: int = 250_000,
    shard: tuple[int, int] = (0, 1),
    reduce: Optional[Callable[[Tensor], Tensor]] = None,
) -> FusedRetrievalResult:
    """Retrieval metrics of a fused pair scorer.

    Args:
        score_pairs: ``(image rows [P], text rows [P]) -> [P]`` scores (higher = better match).
        num_images: ``N_i``.
        text_to_image: ``[N_t]`` the image row of every caption.
        first_stage: ``[N_t, N_i]`` cheap scores, or None to fuse every pair.
        top_k: candidates per query with a first stage.
        batch_size: pairs fused at once.
        max_full_pairs: without a first stage, refuse more pairs than this (name a first stage).
        shard: ``(rank, world_size)``: this process fuses every ``world_size``-th batch; ``reduce``
            (a sum over processes, e.g. ``all_reduce``) then combines the score matrices.

    Returns:
        :class:`FusedRetrievalResult`; ``pairs_scored`` counts each fused pair once.
    """
    n_txt = int(text_to_image.shape[0])
    if first_stage is None:
        if n_txt * num_images > max_full_pairs:
            raise ValueError(
                f"fusing all {n_txt} x {num_images} = {n_txt * num_images:,} pairs exceeds max_full_pairs={max_full_pairs:,}: "
                "configure a first stage (model.retrieval.first_stage) or evaluate fewer images"
            )
        t2i_mask = i2t_mask = torch.ones(n_txt, num_images, dtype=torch.bool)
    else:
        if tuple(first_stage.shape) != (n_txt, num_images):
            raise ValueError(f"first_stage must be [{n_txt}, {num_images}], got {tuple(first_stage.shape)}")
        first_stage = first_stage.float().cpu()
        t2i_mask, i2t_mask = candidate_pairs(first_stage, top_k)
    todo = t2i_mask | i2t_mask
    text_rows, image_rows = torch.nonzero(todo, as_tuple=True)
    fused = torch.zeros(n_txt, num_images)
    rank, world = shard
    for n, start in enumerate(range(0, text_rows.numel(), batch_size)):
        if n % world != rank:
            continue
        t, i = text_rows[start : start + batch_size], image_rows[start : start + batch_size]
        fused[t, i] = score_pairs(i, t).float().cpu()
    if reduce is not None and world > 1:
        fused = reduce(fused)
    if first_stage is None:
        metrics = retrieval_metrics_from_scores(fused, fused.T, text_to_image)
        return FusedRetrievalResult(metrics, None, int(todo.sum()))
    # candidates above every other item of their query, which keep the first-stage order
    offset = float(first_stage.max() - fused[todo].min()) + 1.0 if bool(todo.any()) else 0.0
    t2i = torch.where(t2i_mask, fused + offset, first_stage)
    i2t = torch.where(i2t_mask, fused + offset, first_stage).T
    metrics = retrieval_metrics_from_scores(t2i, i2t.contiguous(), text_to_image)
    first = retrieval_metrics_from_scores(first_stage, first_stage.T.contiguous(), text_to_image)
    return FusedRetrievalResult(metrics, first, int(todo.sum()))
