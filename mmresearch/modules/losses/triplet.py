"""Triplet (hinge) ranking loss of VSE / VSE++ (Faghri et al. 2018) on cosine similarities.

Shapes: ``N`` pairs on this rank, ``D`` embedding size, ``G`` pairs in the global batch,
``R`` rows computed by this call (see :mod:`mmresearch.modules.losses.base`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mmresearch.modules.losses.base import (
    Columns,
    ContrastiveLoss,
    check_bool,
    check_number,
    hard_negative_positives,
    make_view,
)

__all__ = ["triplet_loss", "TripletLoss"]


def _hinge(sim: Tensor, pair: Tensor, positives: Tensor, margin: float, max_violation: bool) -> Tensor:
    """Mean over anchors of the hinge costs of one direction.

    ``sim`` ``[R, C]`` anchor-vs-candidate similarities, ``pair`` ``[R]`` the column of each
    anchor's positive, ``positives`` ``[R, C]`` bool candidates that are never negatives.
    """
    pos_sim = sim.gather(1, pair[:, None])  # [R, 1]
    cost = (margin + sim - pos_sim).clamp_min(0).masked_fill(positives, 0.0)  # [R, G]
    per_anchor = cost.max(dim=1).values if max_violation else cost.sum(dim=1)
    return per_anchor.mean()


def triplet_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    image_ids: Optional[Tensor] = None,
    text_image_ids: Optional[Tensor] = None,
    *,
    margin: float = 0.2,
    max_violation: bool = True,
    columns: Optional[Columns] = None,
    negatives: Optional[Tensor] = None,
    negative_ids: Optional[Tensor] = None,
) -> dict[str, Tensor]:
    """Bidirectional hinge loss on cosine similarities ``s = I @ T^T``.

    For image anchor ``i`` with its paired text ``p``: cost ``max(0, margin - s(i, p) + s(i, j))``
    for every negative text ``j`` (texts sharing ``i``'s image id are never negatives), summed
    over ``j`` (VSE, ``max_violation=False``) or only the hardest ``j`` (VSE++,
    ``max_violation=True``); likewise for text anchors against images. Each direction is the
    **mean over anchors** (VSE++ summed over the batch; the mean keeps the scale independent of
    the batch size); ``loss = loss_i2t + loss_t2i`` as in VSE++.

    Hard negatives (NegCLIP captions, Yuksekgonul et al. 2023) are ``M`` extra candidate texts
    of every image anchor: ``max(0, margin - s(i, p) + s(i, h))`` joins the sum (VSE) or the
    max (VSE++: the hardest negative may now be a hard-negative caption), except for the image a
    negative happens to describe (``negative_ids``), for which it is never a negative. The
    text-to-image direction is unchanged (a hard negative is no anchor: it has no image).

    ``logit_scale`` is ignored (the loss works on unscaled cosine similarities); it is added
    times 0 so a learnable temperature gets a zero gradient rather than none (DDP would flag an
    unused parameter otherwise).

    Args:
        image_features: ``[R, D]`` L2-normalised; text_features: ``[R, D]`` (row ``i`` pairs).
        logit_scale: scalar tensor, ignored.
        image_ids, text_image_ids: ``[R]`` long, or None.
        margin: hinge margin; max_violation: hardest negative only (True) or sum over negatives.
        columns: the whole gathered batch when these rows are one rank's share, else None.
        negatives: ``[M, D]`` L2-normalised hard-negative captions (all ranks'), or None.
        negative_ids: ``[M]`` long image id each negative is nonetheless true of (-1: none), or None.

    Returns:
        ``{"loss", "loss_i2t", "loss_t2i"}``, scalars.
    """
    view = make_view(image_features, text_features, image_ids, text_image_ids, columns)
    pair = view.pair_index()
    sim_i2t = view.image_rows @ view.text_cols.T  # [R, G] image anchors vs all texts
    sim_t2i = view.text_rows @ view.image_cols.T  # [R, G] text anchors vs all images
    positives_i2t = view.positives_i2t()
    if negatives is not None:
        sim_i2t = torch.cat([sim_i2t, view.image_rows @ negatives.T], dim=1)  # [R, G + M]
        extra = hard_negative_positives(view.image_row_ids, negative_ids, negatives.shape[0])
        positives_i2t = torch.cat([positives_i2t, extra], dim=1)
    loss_i2t = _hinge(sim_i2t, pair, positives_i2t, margin, max_violation)
    loss_t2i = _hinge(sim_t2i, pair, view.positives_t2i(), margin, max_violation)
    loss = loss_i2t + loss_t2i + 0.0 * logit_scale
    return {"loss": loss, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i}


class TripletLoss(ContrastiveLoss):
    """VSE / VSE++ triplet loss, as a module (see :func:`triplet_loss`; ``logit_scale`` is ignored).

    Hard-negative captions are extra image-to-text candidates (see :func:`triplet_loss`).

    Args:
        margin: hinge margin ``>= 0`` on cosine similarities.
        max_violation: True: VSE++ hardest negative; False: VSE sum over all negatives.
        local_loss, gather_with_grad: distributed mode, see :class:`ContrastiveLoss`.
    """

    name = "triplet"
    supports_hard_negatives = True

    def __init__(
        self,
        margin: float = 0.2,
        max_violation: bool = True,
        local_loss: bool = True,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__(local_loss=local_loss, gather_with_grad=gather_with_grad)
        self.margin = check_number("margin", margin, low=0.0)
        self.max_violation = check_bool("max_violation", max_violation)

    def compute(self, image_features, text_features, logit_scale, image_ids, text_image_ids, columns, negatives=None, negative_ids=None):
        return triplet_loss(
            image_features, text_features, logit_scale, image_ids, text_image_ids,
            margin=self.margin, max_violation=self.max_violation, columns=columns,
            negatives=negatives, negative_ids=negative_ids,
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, max_violation={self.max_violation}, {super().extra_repr()}"
