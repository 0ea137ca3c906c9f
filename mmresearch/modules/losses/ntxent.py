"""NT-Xent (SimCLR, Chen et al. 2020) applied across modalities.

Shapes: ``N`` pairs on this rank, ``D`` embedding size, ``G`` pairs in the global batch,
``R`` rows computed by this call (see :mod:`mmresearch.modules.losses.base`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mmresearch.modules.losses.base import Columns, ContrastiveLoss, hard_negative_positives, make_view

__all__ = ["ntxent_loss", "NTXentLoss"]


def _anchor_loss(
    logit_scale: Tensor,
    anchors: Tensor,
    anchor_ids: Tensor,
    same: Tensor,
    same_ids: Tensor,
    other: Tensor,
    other_ids: Tensor,
    pair: Tensor,
    extra: Optional[Tensor] = None,
    extra_ids: Optional[Tensor] = None,
) -> Tensor:
    """Mean NT-Xent over ``anchors`` ``[R, D]`` of one modality.

    Candidates: ``same`` ``[G, D]`` (the anchors' modality, the anchor itself at column
    ``pair``), ``other`` ``[G, D]`` (the other modality, the positive at column ``pair``) and
    ``extra`` ``[M, D]`` (hard negatives) or None. Masked out of the denominator: the anchor
    itself and every other embedding sharing its image id (``*_ids``; ``extra_ids`` ``[M]`` or
    None for ``extra``), except the positive.
    """
    cols = torch.arange(same.shape[0], device=anchors.device)
    is_pair = cols[None, :] == pair[:, None]  # [R, G]
    logits_same = logit_scale * anchors @ same.T  # [R, G]
    logits_other = logit_scale * anchors @ other.T  # [R, G]
    mask_same = (anchor_ids[:, None] == same_ids[None, :]) | is_pair
    mask_other = (anchor_ids[:, None] == other_ids[None, :]) & ~is_pair
    parts = [logits_other.masked_fill(mask_other, float("-inf")), logits_same.masked_fill(mask_same, float("-inf"))]
    if extra is not None:
        mask_extra = hard_negative_positives(anchor_ids, extra_ids, extra.shape[0])  # [R, M]
        parts.append((logit_scale * anchors @ extra.T).masked_fill(mask_extra, float("-inf")))
    logits = torch.cat(parts, dim=1)  # [R, 2G (+ M)]
    pos = logits_other.gather(1, pair[:, None]).squeeze(1)  # [R]
    return (torch.logsumexp(logits, dim=1) - pos).mean()


def ntxent_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    image_ids: Optional[Tensor] = None,
    text_image_ids: Optional[Tensor] = None,
    *,
    columns: Optional[Columns] = None,
    negatives: Optional[Tensor] = None,
    negative_ids: Optional[Tensor] = None,
) -> dict[str, Tensor]:
    """Cross-modal NT-Xent over the ``2G`` embeddings (all images and all texts).

    Each embedding ``a`` is an anchor; its positive ``p`` is its pair in the other modality;
    ``l(a) = -log(exp(s(a, p) * scale) / sum_k exp(s(a, k) * scale))`` where ``k`` runs over
    every embedding of both modalities except ``a`` itself and except the other positives of
    ``a`` (embeddings sharing its image id, other than ``p``). ``loss`` is the mean over the
    ``2G`` anchors ``= (loss_image + loss_text) / 2``, the means over image and text anchors.

    Hard negatives (NegCLIP captions, Yuksekgonul et al. 2023) are ``M`` extra negatives ``k`` in
    the denominator of every image anchor (the image-to-text direction, as in NegCLIP), except
    of the image a negative happens to describe (``negative_ids``), where it is left out like
    the anchor's other positives. They are no anchors themselves (no pair) and stay out of the
    text anchors' denominators, so ``loss_text`` is unchanged.

    Args:
        image_features: ``[R, D]`` L2-normalised; text_features: ``[R, D]`` (row ``i`` pairs).
        logit_scale: scalar tensor ``1 / tau``.
        image_ids, text_image_ids: ``[R]`` long, or None.
        columns: the whole gathered batch when these rows are one rank's share, else None.
        negatives: ``[M, D]`` L2-normalised hard-negative captions (all ranks'), or None.
        negative_ids: ``[M]`` long image id each negative is nonetheless true of (-1: none), or None.

    Returns:
        ``{"loss", "loss_image", "loss_text"}``, scalars.
    """
    v = make_view(image_features, text_features, image_ids, text_image_ids, columns)
    pair = v.pair_index()
    loss_image = _anchor_loss(
        logit_scale, v.image_rows, v.image_row_ids, v.image_cols, v.image_col_ids, v.text_cols, v.text_col_ids, pair,
        negatives, negative_ids,
    )
    loss_text = _anchor_loss(
        logit_scale, v.text_rows, v.text_row_ids, v.text_cols, v.text_col_ids, v.image_cols, v.image_col_ids, pair
    )
    return {"loss": (loss_image + loss_text) / 2, "loss_image": loss_image, "loss_text": loss_text}


class NTXentLoss(ContrastiveLoss):
    """Cross-modal NT-Xent, as a module (see :func:`ntxent_loss`); hard-negative captions join
    the image anchors' denominators.

    Args:
        local_loss, gather_with_grad: distributed mode, see :class:`ContrastiveLoss`.
    """

    name = "ntxent"
    supports_hard_negatives = True

    def compute(self, image_features, text_features, logit_scale, image_ids, text_image_ids, columns, negatives=None, negative_ids=None):
        return ntxent_loss(image_features, text_features, logit_scale, image_ids, text_image_ids, columns=columns,
                           negatives=negatives, negative_ids=negative_ids)
