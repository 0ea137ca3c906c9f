"""Compositionality probe: does an image score its true captions above a minimally changed one?

Every evaluation image of the built-in data carries one hard-negative caption with one attribute
changed (shape, colour or size) or its spatial relation swapped. An image *wins* against its
negative through a caption when ``s(image, caption) > s(image, negative)``; ties are losses (a
model with constant embeddings scores 0, not 0.5). An image's score is the share of its captions
that win, and the metric is the mean over images, overall and per kind of change. Chance is 0.5.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from mmresearch.evaluation.metric import first_occurrence


def caption_rows(image_ids: Tensor, text_image_ids: Tensor) -> Tensor:
    """``[T]`` the batch row of each caption's image (every caption's image must be in the batch)."""
    order = torch.argsort(image_ids)
    pos = torch.searchsorted(image_ids[order], text_image_ids).clamp_max(image_ids.numel() - 1)
    rows = order[pos]
    if not bool(torch.equal(image_ids[rows], text_image_ids)):
        raise ValueError("a caption refers to an image that is not in the batch")
    return rows


def wins_from_scores(caption_scores: Tensor, caption_rows: Tensor, negative_scores: Tensor) -> Tensor:
    """Per image, the share of its captions scoring above its hard negative (ties lose).

    Args:
        caption_scores: ``[T]`` score of each caption with its own image.
        caption_rows: ``[T]`` the image row of each caption.
        negative_scores: ``[B]`` score of each image with its hard negative.

    Returns:
        ``[B]`` float in [0, 1].
    """
    wins = (caption_scores.float() > negative_scores.float()[caption_rows]).float()
    b = negative_scores.shape[0]
    total = torch.zeros(b, device=wins.device).index_add_(0, caption_rows, wins)
    count = torch.zeros(b, device=wins.device).index_add_(0, caption_rows, torch.ones_like(wins))
    if bool((count == 0).any()):
        raise ValueError("every image needs at least one caption in its batch for the compositionality probe")
    return total / count


def caption_wins(
    image_embeddings: Tensor,
    image_ids: Tensor,
    text_embeddings: Tensor,
    text_image_ids: Tensor,
    negative_embeddings: Tensor,
) -> Tensor:
    """Per image, the share of its captions that score above its hard negative (cosine scores).

    Args:
        image_embeddings: ``[B, E]`` normalised image embeddings.
        image_ids: ``[B]`` distinct ids of the images.
        text_embeddings: ``[T, E]`` captions of these images.
        text_image_ids: ``[T]`` the image id of each caption (each must be in ``image_ids``).
        negative_embeddings: ``[B, E]`` the hard-negative caption of each image.

    Returns:
        ``[B]`` float in [0, 1].
    """
    rows = caption_rows(image_ids, text_image_ids)
    img = image_embeddings.float()
    positive = (text_embeddings.float() * img[rows]).sum(-1)  # [T]
    negative = (negative_embeddings.float() * img).sum(-1)  # [B]
    return wins_from_scores(positive, rows, negative)


class CompositionalityMetric(Metric):
    """Share of images whose true captions beat their hard negative, per kind of change.

    ``update(image_ids [B], wins [B], kinds [B])`` with ``wins`` from :func:`caption_wins`;
    ``compute()`` returns ``{"comp_acc": ..., "comp_acc_<kind>": ...}``. Under DDP the states are
    gathered and images repeated by the sampler's padding are counted once.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, kind_names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind_names = tuple(kind_names)
        for name in ("image_ids", "wins", "kinds"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, image_ids: Tensor, wins: Tensor, kinds: Tensor) -> None:
        self.image_ids.append(image_ids.detach().long())
        self.wins.append(wins.detach().float())
        self.kinds.append(kinds.detach().long())

    def compute(self) -> Dict[str, float]:
        if isinstance(self.image_ids, list) and not self.image_ids:  # (a tensor once synced across ranks)
            return {}
        keep = first_occurrence(dim_zero_cat(self.image_ids))
        wins, kinds = dim_zero_cat(self.wins)[keep], dim_zero_cat(self.kinds)[keep]
        out = {"comp_acc": float(wins.mean())}
        for k, name in enumerate(self.kind_names):
            chosen = kinds == k
            if bool(chosen.any()):
                out[f"comp_acc_{name}"] = float(wins[chosen].mean())
        return out
