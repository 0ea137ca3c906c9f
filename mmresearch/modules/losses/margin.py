"""Margin contrastive loss (Hadsell, Chopra & LeCun 2006) on cosine distance.

Shapes: ``N`` pairs on this rank, ``D`` embedding size, ``G`` pairs in the global batch,
``R`` rows computed by this call (see :mod:`mmresearch.modules.losses.base`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mmresearch.modules.losses.base import Columns, ContrastiveLoss, check_number, hard_negative_positives, make_view

__all__ = ["margin_contrastive_loss", "MarginContrastiveLoss"]


def _num_equal_pairs(a: Tensor, b: Tensor) -> Tensor:
    """Number of pairs ``(i, j)`` with ``a[i] == b[j]`` (``a`` ``[P]``, ``b`` ``[Q]``), without
    building the ``P x Q`` matrix. Returns a 0-d long tensor (no host sync)."""
    sorted_b, _ = torch.sort(b.to(a.dtype))
    hi = torch.searchsorted(sorted_b, a, right=True)
    lo = torch.searchsorted(sorted_b, a, right=False)
    return (hi - lo).sum()


def _num_positive_pairs(image_ids: Tensor, text_image_ids: Tensor) -> Tensor:
    """Number of positive (image, text) pairs in the ``G x G`` matrix, without building it.

    A pair is positive when the ids are equal or it is a row's own pair (``image_ids`` ``[G]``,
    ``text_image_ids`` ``[G]``). Returns a 0-d long tensor (no host sync).
    """
    return _num_equal_pairs(image_ids, text_image_ids) + (image_ids != text_image_ids).sum()


def margin_contrastive_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    image_ids: Optional[Tensor] = None,
    text_image_ids: Optional[Tensor] = None,
    *,
    margin: float = 0.5,
    columns: Optional[Columns] = None,
    negatives: Optional[Tensor] = None,
    negative_ids: Optional[Tensor] = None,
) -> dict[str, Tensor]:
    """Hadsell et al.'s contrastive loss over every image-text pair, with ``d = 1 - cos``.

    Positive pairs (same image id, or a row's own pair) are pulled with ``d^2``; negative pairs
    pushed with ``max(0, margin - d)^2``. The two are balanced:
    ``loss = loss_pos + loss_neg`` with ``loss_pos`` the mean over all positive pairs and
    ``loss_neg`` the mean over all negative pairs of the global ``G x G`` matrix (0 when there
    are none). A rank computing only its rows divides by the global counts and multiplies by
    ``G / R``, so the mean over ranks is the global loss.

    Hard negatives (NegCLIP captions, Yuksekgonul et al. 2023) are ``M`` extra texts: every
    (image, hard negative) pair is a negative pair, pushed like the others, except with the
    image a negative happens to describe (``negative_ids``), a positive pair, pulled. The means
    then run over the positive and the negative pairs of the ``G x (G + M)`` matrix.

    ``logit_scale`` is ignored; it is added times 0 so a learnable temperature gets a zero
    gradient rather than none.

    Args:
        image_features: ``[R, D]`` L2-normalised; text_features: ``[R, D]`` (row ``i`` pairs).
        logit_scale: scalar tensor, ignored.
        image_ids, text_image_ids: ``[R]`` long, or None.
        margin: distance below which negatives are pushed (cosine distance is in ``[0, 2]``).
        columns: the whole gathered batch when these rows are one rank's share, else None.
        negatives: ``[M, D]`` L2-normalised hard-negative captions (all ranks'), or None.
        negative_ids: ``[M]`` long image id each negative is nonetheless true of (-1: none), or None.

    Returns:
        ``{"loss", "loss_pos", "loss_neg"}``, scalars.
    """
    v = make_view(image_features, text_features, image_ids, text_image_ids, columns)
    dist = 1.0 - v.image_rows @ v.text_cols.T  # [R, G]
    positives = v.positives_i2t()  # [R, G]
    g = v.num_cols
    num_pos = _num_positive_pairs(v.image_col_ids, v.text_col_ids)
    num_texts = g
    if negatives is not None:
        dist = torch.cat([dist, 1.0 - v.image_rows @ negatives.T], dim=1)  # [R, G + M]
        positives = torch.cat([positives, hard_negative_positives(v.image_row_ids, negative_ids, negatives.shape[0])], dim=1)
        num_texts += negatives.shape[0]
        if negative_ids is not None:
            num_pos = num_pos + _num_equal_pairs(v.image_col_ids, negative_ids)
    num_pos = num_pos.to(dist.dtype)
    num_neg = (g * num_texts - num_pos).clamp_min(1.0)
    zero = dist.new_zeros(())
    pull = torch.where(positives, dist.square(), zero).sum()
    push = torch.where(positives, zero, (margin - dist).clamp_min(0).square()).sum()
    loss_pos = pull * v.row_factor / num_pos
    loss_neg = push * v.row_factor / num_neg
    loss = loss_pos + loss_neg + 0.0 * logit_scale
    return {"loss": loss, "loss_pos": loss_pos, "loss_neg": loss_neg}


class MarginContrastiveLoss(ContrastiveLoss):
    """Hadsell et al. margin contrastive loss on cosine distance (see :func:`margin_contrastive_loss`).

    ``logit_scale`` is ignored. Hard-negative captions are extra negative pairs (see
    :func:`margin_contrastive_loss`).

    Args:
        margin: negatives closer than this cosine distance (in ``(0, 2]``) are pushed apart.
        local_loss, gather_with_grad: distributed mode, see :class:`ContrastiveLoss`.
    """

    name = "margin"
    supports_hard_negatives = True

    def __init__(self, margin: float = 0.5, local_loss: bool = True, gather_with_grad: bool = True) -> None:
        super().__init__(local_loss=local_loss, gather_with_grad=gather_with_grad)
        self.margin = check_number("margin", margin, low=0.0, high=2.0, low_open=True)

    def compute(self, image_features, text_features, logit_scale, image_ids, text_image_ids, columns, negatives=None, negative_ids=None):
        return margin_contrastive_loss(
            image_features, text_features, logit_scale, image_ids, text_image_ids,
            margin=self.margin, columns=columns, negatives=negatives, negative_ids=negative_ids,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, {super().extra_repr()}"
