"""InfoNCE: CLIP's symmetric cross entropy over image-text similarities (Radford et al. 2021).

Shapes: ``N`` pairs on this rank, ``D`` embedding size, ``G`` pairs in the global batch,
``R`` rows computed by this call (see :mod:`mmresearch.modules.losses.base`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mmresearch.modules.losses.base import Columns, ContrastiveLoss, check_number, hard_negative_positives, make_view

__all__ = ["infonce_loss", "InfoNCELoss"]


def _soft_cross_entropy(logits: Tensor, positives: Tensor, label_smoothing: float) -> Tensor:
    """Mean over rows of the cross entropy of ``logits`` ``[R, G]`` against soft targets.

    The target of a row is uniform over its ``positives`` ``[R, G]`` (bool), then smoothed as
    ``torch.nn.functional.cross_entropy`` does: ``(1 - eps) * target + eps / G``.
    """
    target = positives.to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True)
    if label_smoothing > 0:
        target = target * (1.0 - label_smoothing) + label_smoothing / logits.shape[1]
    return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()


def _chunk_loss_sum(rows: Tensor, cols: Tensor, logit_scale: Tensor, row_ids: Tensor, col_ids: Tensor, pair_cols: Tensor,
                    label_smoothing: float, labels: Optional[Tensor], extra: Optional[Tensor], extra_ids: Optional[Tensor]) -> Tensor:
    """Summed cross entropy of ``rows`` ``[c, D]`` against ``cols`` ``[G, D]`` (+ ``extra`` ``[M, D]``
    columns); integer ``labels`` when each row has one positive, else soft targets."""
    logits = logit_scale * rows @ cols.T
    if extra is not None:
        logits = torch.cat([logits, logit_scale * rows @ extra.T], dim=1)
    if labels is not None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction="sum")
    positives = row_ids[:, None] == col_ids[None, :]
    positives[torch.arange(rows.shape[0], device=rows.device), pair_cols] = True
    if extra is not None:
        positives = torch.cat([positives, hard_negative_positives(row_ids, extra_ids, extra.shape[0])], dim=1)
    return _soft_cross_entropy(logits, positives, label_smoothing) * rows.shape[0]


def _chunked_infonce(view, logit_scale: Tensor, label_smoothing: float, negatives: Optional[Tensor], negative_ids: Optional[Tensor],
                     chunk_size: int) -> dict[str, Tensor]:
    """:func:`infonce_loss` a chunk of rows at a time, each chunk checkpointed."""
    from torch.utils.checkpoint import checkpoint

    r = view.num_rows
    labels = _pair_labels(view, negatives, negative_ids)
    pair_cols = torch.arange(r, device=view.image_rows.device) + view.offset
    totals = []
    for rows, cols, row_ids, col_ids, extra in (
        (view.image_rows, view.text_cols, view.image_row_ids, view.text_col_ids, negatives),
        (view.text_rows, view.image_cols, view.text_row_ids, view.image_col_ids, None),
    ):
        total = rows.new_zeros(())
        for start in range(0, r, chunk_size):
            sl = slice(start, start + chunk_size)
            total = total + checkpoint(
                _chunk_loss_sum, rows[sl], cols, logit_scale, row_ids[sl], col_ids, pair_cols[sl], label_smoothing,
                None if labels is None else labels[sl], extra, negative_ids if extra is not None else None, use_reentrant=False,
            )
        totals.append(total / r)
    loss_i2t, loss_t2i = totals
    return {"loss": (loss_i2t + loss_t2i) / 2, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i}


def _pair_labels(view, negatives: Optional[Tensor], negative_ids: Optional[Tensor]) -> Optional[Tensor]:
    """``[R]`` column of each row's only positive (``offset + arange(R)``) when every row has
    exactly one: the batch is paired (image and text column ids equal), the ids are distinct, and
    no hard negative is true of a row's image. None otherwise (several captions per image)."""
    ids = view.image_col_ids
    if not torch.equal(ids, view.text_col_ids) or torch.unique(ids).numel() != ids.numel():
        return None
    if negatives is not None and negative_ids is not None and bool((view.image_row_ids[:, None] == negative_ids[None, :]).any()):
        return None
    r = view.image_rows.shape[0]
    return torch.arange(r, device=ids.device) + view.offset


def infonce_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    image_ids: Optional[Tensor] = None,
    text_image_ids: Optional[Tensor] = None,
    *,
    label_smoothing: float = 0.0,
    columns: Optional[Columns] = None,
    negatives: Optional[Tensor] = None,
    negative_ids: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
) -> dict[str, Tensor]:
    """Symmetric InfoNCE.

    ``logits_i2t = logit_scale * I @ T^T`` ``[R, G]`` and ``logits_t2i = logit_scale * T @ I^T``
    ``[R, G]``; each row's target is uniform over its positives (texts / images with the same
    image id, and always its own pair: ALBEF-style soft targets; one-hot on the pair without
    ids), smoothed by ``label_smoothing``. ``loss = (loss_i2t + loss_t2i) / 2``, each term the
    mean over rows.

    Args:
        image_features: ``[R, D]`` L2-normalised; text_features: ``[R, D]`` (row ``i`` pairs).
        logit_scale: scalar tensor ``1 / tau``.
        image_ids, text_image_ids: ``[R]`` long, or None.
        label_smoothing: ``eps`` in ``[0, 1)``.
        columns: the whole gathered batch when these rows are one rank's share, else None.
        negatives: ``[M, D]`` hard-negative captions (NegCLIP, Yuksekgonul et al. 2023): extra
            columns of the image-to-text logits that are no image's positive. The text-to-image
            direction is unchanged (a negative caption has no image to retrieve).
        negative_ids: ``[M]`` long image id each negative is nonetheless true of (-1: none); a
            negative whose id equals a row's image id is a positive of that row.
        chunk_size: compute the logits ``chunk_size`` rows at a time, each chunk under activation
            checkpointing (its ``[chunk, G]`` logits are recomputed in backward, not kept), so
            memory grows with ``chunk_size * G`` instead of ``R * G``; same loss and gradients.

    Returns:
        ``{"loss", "loss_i2t", "loss_t2i"}``, scalars.
    """
    view = make_view(image_features, text_features, image_ids, text_image_ids, columns)
    if chunk_size is not None and view.num_rows > chunk_size:
        return _chunked_infonce(view, logit_scale, label_smoothing, negatives, negative_ids, int(chunk_size))
    logits_i2t = logit_scale * view.image_rows @ view.text_cols.T  # [R, G]
    logits_t2i = logit_scale * view.text_rows @ view.image_cols.T  # [R, G]
    labels = _pair_labels(view, negatives, negative_ids)
    if labels is not None:  # one positive per row: the same loss through the fused cross entropy
        if negatives is not None:
            logits_i2t = torch.cat([logits_i2t, logit_scale * view.image_rows @ negatives.T], dim=1)  # [R, G + M]
        loss_i2t = F.cross_entropy(logits_i2t, labels, label_smoothing=label_smoothing)
        loss_t2i = F.cross_entropy(logits_t2i, labels, label_smoothing=label_smoothing)
        return {"loss": (loss_i2t + loss_t2i) / 2, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i}
    positives_i2t = view.positives_i2t()
    if negatives is not None:
        logits_i2t = torch.cat([logits_i2t, logit_scale * view.image_rows @ negatives.T], dim=1)  # [R, G + M]
        extra_positives = hard_negative_positives(view.image_row_ids, negative_ids, negatives.shape[0])
        positives_i2t = torch.cat([positives_i2t, extra_positives], dim=1)
    loss_i2t = _soft_cross_entropy(logits_i2t, positives_i2t, label_smoothing)
    loss_t2i = _soft_cross_entropy(logits_t2i, view.positives_t2i(), label_smoothing)
    return {"loss": (loss_i2t + loss_t2i) / 2, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i}


class InfoNCELoss(ContrastiveLoss):
    """CLIP symmetric cross entropy, as a module (see :func:`infonce_loss`).

    Args:
        label_smoothing: ``eps`` in ``[0, 1)`` applied to the (soft) targets.
        local_loss, gather_with_grad: distributed mode, see :class:`ContrastiveLoss`.
        chunk_size: rows of logits computed at once, each chunk recomputed in backward (bounded
            memory for global batches whose full logits matrix does not fit); None: all at once.
    """

    name = "infonce"
    supports_hard_negatives = True

    def __init__(self, label_smoothing: float = 0.0, local_loss: bool = True, gather_with_grad: bool = True,
                 chunk_size: Optional[int] = None) -> None:
        super().__init__(local_loss=local_loss, gather_with_grad=gather_with_grad)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"loss.chunk_size must be null or an integer >= 1, got {chunk_size!r}")
        self.chunk_size = chunk_size

    def compute(self, image_features, text_features, logit_scale, image_ids, text_image_ids, columns, negatives=None, negative_ids=None):
        return infonce_loss(
            image_features, text_features, logit_scale, image_ids, text_image_ids,
            label_smoothing=self.label_smoothing, columns=columns, negatives=negatives, negative_ids=negative_ids,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, chunk_size={self.chunk_size}, {super().extra_repr()}"
