"""Shared pieces of the contrastive losses: option checks, the row/column view, the base module.

Shapes: ``N`` pairs on this rank, ``D`` embedding size, ``W`` ranks, ``G = W * N`` pairs in the
global batch, ``R`` rows this call computes (``R = N`` with ``local_loss``, else ``R = G``).

Every loss is written over a :class:`PairView`: ``R`` *rows* (the anchors this process computes)
against ``G`` *columns* (the whole batch). Row ``i`` is the pair at global index
``offset + i``. Single-process (or ``local_loss=False``) calls have rows == columns and
``offset = 0``. Each loss normalises so that the mean over ranks of the per-rank (local-rows)
loss equals the loss on the whole batch: a loss averaged over ``G`` anchors becomes an average
over the ``R`` local anchors; a loss with another global normaliser ``Z`` is multiplied by
``G / R`` (:attr:`PairView.row_factor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from mmresearch.utils.distributed import (
    all_gather_ids,
    all_gather_no_grad,
    all_gather_with_grad,
    world_info,
)

__all__ = [
    "Columns",
    "PairView",
    "make_view",
    "check_bool",
    "check_number",
    "check_inputs",
    "as_scalar",
    "hard_negative_positives",
    "ContrastiveLoss",
]


# ----------------------------------------------------------------------------- option checks


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise ``TypeError`` naming ``loss.<name>``."""
    if not isinstance(value, bool):
        raise TypeError(f"loss.{name} must be a bool, got {value!r}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real in the interval, else raise ``ValueError``.

    The interval is ``[low, high]``, each end open when ``low_open`` / ``high_open``; the error
    names the option as ``loss.<name>`` and shows the interval, e.g.
    ``loss.label_smoothing must be in [0, 1), got 1.5``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"loss.{name} must be a number, got {value!r}")
    value = float(value)
    bad = not math.isfinite(value)
    bad |= value < low or (low_open and value == low)
    bad |= value > high or (high_open and value == high)
    if bad:
        lo = "-inf" if low == -math.inf else f"{low:g}"
        hi = "inf" if high == math.inf else f"{high:g}"
        interval = f"{'(' if low_open or low == -math.inf else '['}{lo}, {hi}{')' if high_open or high == math.inf else ']'}"
        raise ValueError(f"loss.{name} must be in {interval}, got {value:g}")
    return value


# ----------------------------------------------------------------------------- inputs


def as_scalar(logit_scale: Tensor | float, like: Tensor) -> Tensor:
    """``logit_scale`` (a one-element tensor or a number) as a 0-d tensor; keeps its graph."""
    if not torch.is_tensor(logit_scale):
        return torch.as_tensor(float(logit_scale), dtype=like.dtype, device=like.device)
    if logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar tensor, got shape {tuple(logit_scale.shape)}")
    return logit_scale.reshape(())


def check_inputs(
    image_features: Tensor,
    text_features: Tensor,
    image_ids: Optional[Tensor],
    text_image_ids: Optional[Tensor],
) -> None:
    """Check shapes: features ``[N, D]`` both, ids ``[N]`` integer, ids both given or both None."""
    if image_features.dim() != 2 or text_features.dim() != 2:
        raise ValueError(
            "image_features and text_features must be [N, D], got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must have the same shape [N, D] (row i of each is a "
            f"pair), got {tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if (image_ids is None) != (text_image_ids is None):
        raise ValueError("image_ids and text_image_ids must be given together (or both None)")
    n = image_features.shape[0]
    for name, ids in (("image_ids", image_ids), ("text_image_ids", text_image_ids)):
        if ids is None:
            continue
        if ids.shape != (n,):
            raise ValueError(f"{name} must be [N] = [{n}], got {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got {ids.dtype}")


def hard_negative_positives(row_ids: Tensor, negative_ids: Optional[Tensor], num_negatives: int) -> Tensor:
    """``[R, M]`` bool: hard negative ``m`` is true of row ``i``'s image after all.

    A hard-negative caption (NegCLIP) is made from one image by changing one attribute, so it
    describes none of the batch's images, and every loss treats it as a negative of every image,
    except where ``negative_ids[m]`` (``[M]`` long, -1 for none) equals the row's image id
    (``row_ids`` ``[R]``): it then happens to describe that image exactly and is one of its
    positives. ``negative_ids=None``: no such image (all False).
    """
    if negative_ids is None:
        return torch.zeros(row_ids.shape[0], num_negatives, dtype=torch.bool, device=row_ids.device)
    return row_ids[:, None] == negative_ids[None, :]


# ----------------------------------------------------------------------------- rows and columns


@dataclass(frozen=True)
class Columns:
    """The whole (gathered) batch: the columns every row is compared with.

    Attributes:
        image_features: ``[G, D]`` all images, rank order.
        text_features: ``[G, D]`` all texts, rank order.
        image_ids: ``[G]`` long image id of every image row.
        text_image_ids: ``[G]`` long image id of every text row.
        offset: global index of this process's first row (``rank * N``).
    """

    image_features: Tensor
    text_features: Tensor
    image_ids: Tensor
    text_image_ids: Tensor
    offset: int


@dataclass(frozen=True)
class PairView:
    """``R`` rows (this call's anchors) against ``G`` columns (the whole batch).

    Attributes:
        image_rows: ``[R, D]`` images whose rows this call computes.
        text_rows: ``[R, D]`` texts whose rows this call computes (pairs of ``image_rows``).
        image_row_ids: ``[R]``; text_row_ids: ``[R]``.
        image_cols: ``[G, D]``; text_cols: ``[G, D]``.
        image_col_ids: ``[G]``; text_col_ids: ``[G]``.
        offset: global index of row 0; row ``i``'s pair is column ``offset + i``.
    """

    image_rows: Tensor
    text_rows: Tensor
    image_row_ids: Tensor
    text_row_ids: Tensor
    image_cols: Tensor
    text_cols: Tensor
    image_col_ids: Tensor
    text_col_ids: Tensor
    offset: int

    @property
    def num_rows(self) -> int:
        """``R``."""
        return self.image_rows.shape[0]

    @property
    def num_cols(self) -> int:
        """``G``."""
        return self.image_cols.shape[0]

    @property
    def row_factor(self) -> float:
        """``G / R``: turns a global-normaliser loss over these rows into its per-rank share."""
        return self.num_cols / self.num_rows

    def pair_index(self) -> Tensor:
        """``[R]`` long: the column of each row's own pair (``offset + i``)."""
        return torch.arange(self.num_rows, device=self.image_rows.device) + self.offset

    def pair_mask(self) -> Tensor:
        """``[R, G]`` bool, True at each row's own pair."""
        cols = torch.arange(self.num_cols, device=self.image_rows.device)
        return cols[None, :] == self.pair_index()[:, None]

    def positives_i2t(self) -> Tensor:
        """``[R, G]`` bool: text ``j`` is a positive of image row ``i`` (same image id, or the pair)."""
        return (self.image_row_ids[:, None] == self.text_col_ids[None, :]) | self.pair_mask()

    def positives_t2i(self) -> Tensor:
        """``[R, G]`` bool: image ``j`` is a positive of text row ``i`` (same image id, or the pair)."""
        return (self.text_row_ids[:, None] == self.image_col_ids[None, :]) | self.pair_mask()


def make_view(
    image_features: Tensor,
    text_features: Tensor,
    image_ids: Optional[Tensor] = None,
    text_image_ids: Optional[Tensor] = None,
    columns: Optional[Columns] = None,
) -> PairView:
    """Build the :class:`PairView` of a loss call.

    Args:
        image_features: ``[R, D]`` the rows' images; text_features: ``[R, D]`` the rows' texts.
        image_ids, text_image_ids: ``[R]`` ids of the rows, or None (each row its own image:
            ids ``offset + arange(R)``).
        columns: the whole batch; None means the rows are the whole batch.
    """
    check_inputs(image_features, text_features, image_ids, text_image_ids)
    r = image_features.shape[0]
    offset = 0 if columns is None else columns.offset
    if image_ids is None:
        image_ids = text_image_ids = torch.arange(r, device=image_features.device) + offset
    assert text_image_ids is not None
    if columns is None:
        columns = Columns(image_features, text_features, image_ids, text_image_ids, 0)
    else:
        g = columns.image_features.shape[0]
        if columns.text_features.shape[0] != g or columns.image_ids.shape != (g,) or columns.text_image_ids.shape != (g,):
            raise ValueError("columns: features must be [G, D] and ids [G] with one G")
        if not 0 <= offset <= g - r:
            raise ValueError(f"columns.offset={offset} does not fit {r} rows in {g} columns")
    return PairView(
        image_rows=image_features,
        text_rows=text_features,
        image_row_ids=image_ids,
        text_row_ids=text_image_ids,
        image_cols=columns.image_features,
        text_cols=columns.text_features,
        image_col_ids=columns.image_ids,
        text_col_ids=columns.text_image_ids,
        offset=offset,
    )


# ----------------------------------------------------------------------------- base module


class ContrastiveLoss(nn.Module):
    """Base of the image-text losses: input checks and the distributed bookkeeping.

    Subclasses set :attr:`name` and implement :meth:`compute`, which calls their pure function.

    Distributed (``torch.distributed`` initialised with world size ``W > 1``; every rank must
    hold the same ``N``): features and ids are gathered from all ranks.

    * ``local_loss=True, gather_with_grad=True`` (default): each rank computes only its own
      rows (its images vs all texts, its texts vs all images; its pairs sit at columns
      ``rank * N + i``), with gradients through the gather. Each loss is normalised so that the
      mean over ranks of the returned values equals the loss on the concatenated batch, and the
      DDP-averaged gradients equal its gradients (exact).
    * ``local_loss=False, gather_with_grad=True``: every rank computes the whole-batch loss.
      The gather's backward sums the ``W`` identical copies of each rank's feature gradient
      (the ``W`` factor of open_clip issue #616), and DDP's mean over ranks divides it back,
      so the averaged gradients are exact too.
    * ``local_loss=False, gather_with_grad=False``: plain ``all_gather``; this rank's slice is
      the live tensor. Only this rank sees its slice's gradient, so DDP's mean would leave it
      ``1 / W`` too small: the gradient into the live slice is multiplied by ``W`` (identity in
      the forward pass), which makes it exact. (open_clip leaves it ``1 / W`` too small.)
    * ``local_loss=True, gather_with_grad=False`` is rejected: the gradient of this rank's
      features from the other ranks' rows would be lost, so no rescaling can make it exact.
    """

    name: ClassVar[str] = ""

    def __init__(self, local_loss: bool = True, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.local_loss = check_bool("local_loss", local_loss)
        self.gather_with_grad = check_bool("gather_with_grad", gather_with_grad)
        if self.local_loss and not self.gather_with_grad:
            raise ValueError(
                "loss.gather_with_grad=False needs loss.local_loss=False: with local rows and no "
                "gradient through the gather, the gradient each rank's features receive from the "
                "other ranks' rows is lost and the loss is no longer the same at every world size; "
                "use gather_with_grad=True (recommended) or local_loss=False"
            )

    def compute(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        image_ids: Optional[Tensor],
        text_image_ids: Optional[Tensor],
        columns: Optional[Columns],
    ) -> dict[str, Tensor]:
        """Call this loss's pure function with the module's options (see :func:`make_view`)."""
        raise NotImplementedError

    #: Whether :meth:`forward` accepts ``hard_negative_text_features`` (NegCLIP-style extra
    #: negatives); then :meth:`compute` also takes ``negatives`` ``[M, D]`` and ``negative_ids``
    #: ``[M]`` (all ranks' negatives under DDP, gathered like the texts). Every built-in loss does.
    supports_hard_negatives: bool = False

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        image_ids: Optional[Tensor] = None,
        text_image_ids: Optional[Tensor] = None,
        hard_negative_text_features: Optional[Tensor] = None,
        hard_negative_image_ids: Optional[Tensor] = None,
    ) -> dict[str, Tensor]:
        """Compute the loss of this rank's batch.

        Args:
            image_features: ``[N, D]`` L2-normalised image embeddings of this rank.
            text_features: ``[N, D]`` L2-normalised text embeddings; row ``i`` pairs with image ``i``.
            logit_scale: scalar tensor, the multiplier ``1 / tau`` (already exponentiated).
            image_ids: ``[N]`` long image id of each image row, or None (pairs are the only positives).
            text_image_ids: ``[N]`` long image id of each text row; given together with ``image_ids``.
            hard_negative_text_features: ``[M, D]`` L2-normalised captions that are true of no
                image of the batch (e.g. one attribute of image ``i``'s scene changed), added as
                extra negative texts for every image in the image-to-text direction (gathered
                from all ranks under DDP, every rank with the same ``M``; each loss's docstring
                says how it uses them); only for losses with ``supports_hard_negatives``.
            hard_negative_image_ids: ``[M]`` long: the image id a hard negative happens to be true
                of (it is then that image's positive, never its negative), -1 for none; or None
                (all -1). See :func:`hard_negative_positives`.

        Returns:
            ``{"loss": scalar to backprop, <named terms>: scalars}``.
        """
        check_inputs(image_features, text_features, image_ids, text_image_ids)
        negatives = hard_negative_text_features
        if negatives is not None:
            if not self.supports_hard_negatives:
                raise ValueError(
                    f"loss {self.name!r} does not take hard-negative captions; set data.train_negatives=false"
                )
            if negatives.ndim != 2 or negatives.shape[1] != text_features.shape[1]:
                raise ValueError(f"hard_negative_text_features must be [M, {text_features.shape[1]}], got {tuple(negatives.shape)}")
            ids = hard_negative_image_ids
            if ids is not None and (ids.shape != negatives.shape[:1] or ids.is_floating_point() or ids.dtype == torch.bool):
                raise ValueError(
                    f"hard_negative_image_ids must be an integer [M] = [{negatives.shape[0]}], got {ids.dtype} {tuple(ids.shape)}"
                )
        logit_scale = as_scalar(logit_scale, image_features)
        rank, world = world_info()
        neg_ids = hard_negative_image_ids
        if negatives is not None and neg_ids is None:
            neg_ids = torch.full((negatives.shape[0],), -1, dtype=torch.long, device=negatives.device)
        extra = {} if negatives is None else {"negatives": negatives, "negative_ids": neg_ids}
        if world == 1:
            return self.compute(image_features, text_features, logit_scale, image_ids, text_image_ids, None, **extra)

        n = image_features.shape[0]
        if image_ids is None:
            image_ids = torch.arange(n, device=image_features.device) + rank * n
            text_image_ids = image_ids
        assert text_image_ids is not None
        all_image_ids = all_gather_ids(image_ids)
        all_text_ids = all_gather_ids(text_image_ids)
        if self.gather_with_grad:
            gather = all_gather_with_grad
        else:  # only with local_loss=False (checked in __init__): see the class docstring
            def gather(x: Tensor) -> Tensor:
                return all_gather_no_grad(x, local_grad_scale=float(world))
        all_images, all_texts = gather(image_features), gather(text_features)
        if negatives is not None:
            extra = {"negatives": gather(negatives), "negative_ids": all_gather_ids(neg_ids)}

        if self.local_loss:
            columns = Columns(all_images, all_texts, all_image_ids, all_text_ids, offset=rank * n)
            return self.compute(image_features, text_features, logit_scale, image_ids, text_image_ids, columns, **extra)
        return self.compute(all_images, all_texts, logit_scale, all_image_ids, all_text_ids, None, **extra)

    def extra_repr(self) -> str:
        return f"local_loss={self.local_loss}, gather_with_grad={self.gather_with_grad}"
