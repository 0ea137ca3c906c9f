"""SigLIP: pairwise sigmoid loss for image-text pre-training (Zhai et al. 2023).

Shapes: ``N`` pairs on this rank, ``D`` embedding size, ``G`` pairs in the global batch,
``R`` rows computed by this call (see :mod:`mmresearch.modules.losses.base`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmresearch.modules.losses.base import (
    Columns,
    ContrastiveLoss,
    check_bool,
    check_number,
    hard_negative_positives,
    make_view,
)

__all__ = ["siglip_loss", "SigLIPLoss"]


def siglip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    image_ids: Optional[Tensor] = None,
    text_image_ids: Optional[Tensor] = None,
    *,
    logit_bias: Tensor | float,
    columns: Optional[Columns] = None,
    negatives: Optional[Tensor] = None,
    negative_ids: Optional[Tensor] = None,
) -> dict[str, Tensor]:
    """Sigmoid loss over every image-text pair.

    ``logits = logit_scale * I @ T^T + logit_bias`` ``[R, G]`` (image rows vs all texts),
    ``labels`` = +1 for positives (same image id, or the pair) and -1 otherwise;
    ``loss = -sum(logsigmoid(labels * logits)) / G`` over the whole ``G x G`` matrix, ``G`` the
    number of images in the global batch, as in the paper. A rank computing only its ``R = N``
    rows divides its share by ``R`` instead, so the mean over ranks is the global loss.

    Hard negatives (NegCLIP captions, Yuksekgonul et al. 2023) are ``M`` extra text columns
    ``logit_scale * I @ H^T + logit_bias`` ``[R, M]`` labelled -1 for every image (+1 only for
    the image a negative happens to describe, ``negative_ids``): the sum runs over the
    ``G x (G + M)`` matrix and the normaliser stays ``G``, the number of images (the paper's
    ``|B|``), so each image's loss is the sum of its ``G + M`` sigmoid terms.

    Args:
        image_features: ``[R, D]`` L2-normalised; text_features: ``[R, D]`` (row ``i`` pairs).
        logit_scale: scalar tensor ``1 / tau``; logit_bias: scalar tensor (or number) ``b``.
        image_ids, text_image_ids: ``[R]`` long, or None.
        columns: the whole gathered batch when these rows are one rank's share, else None.
        negatives: ``[M, D]`` L2-normalised hard-negative captions (all ranks'), or None.
        negative_ids: ``[M]`` long image id each negative is nonetheless true of (-1: none), or None.

    Returns:
        ``{"loss", "loss_pos", "loss_neg"}``: ``loss = loss_pos + loss_neg``, the sums over the
        positive and the negative pairs (same normaliser).
    """
    view = make_view(image_features, text_features, image_ids, text_image_ids, columns)
    logits = logit_scale * view.image_rows @ view.text_cols.T + logit_bias  # [R, G]
    positives = view.positives_i2t()  # [R, G]
    if negatives is not None:
        logits = torch.cat([logits, logit_scale * view.image_rows @ negatives.T + logit_bias], dim=1)  # [R, G + M]
        positives = torch.cat([positives, hard_negative_positives(view.image_row_ids, negative_ids, negatives.shape[0])], dim=1)
    log_lik = F.logsigmoid(torch.where(positives, logits, -logits))
    zero = log_lik.new_zeros(())
    loss_pos = -torch.where(positives, log_lik, zero).sum() / view.num_rows
    loss_neg = -torch.where(positives, zero, log_lik).sum() / view.num_rows
    return {"loss": loss_pos + loss_neg, "loss_pos": loss_pos, "loss_neg": loss_neg}


class SigLIPLoss(ContrastiveLoss):
    """SigLIP sigmoid loss with its bias ``logit_bias`` (see :func:`siglip_loss`).

    The temperature (``logit_scale``) belongs to the model; the bias belongs to this module.
    Hard-negative captions are extra columns labelled -1 (see :func:`siglip_loss`).

    Args:
        init_bias: initial value of ``logit_bias`` (the paper uses -10, with ``logit_scale`` 10).
        learnable_bias: True: ``logit_bias`` is an ``nn.Parameter``; False: a fixed buffer.
        local_loss, gather_with_grad: distributed mode, see :class:`ContrastiveLoss`.

    The returned dict also holds ``"logit_bias"`` (detached) for logging.
    """

    name = "siglip"
    supports_hard_negatives = True

    def __init__(
        self,
        init_bias: float = -10.0,
        learnable_bias: bool = True,
        local_loss: bool = True,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__(local_loss=local_loss, gather_with_grad=gather_with_grad)
        init_bias = check_number("init_bias", init_bias, low=-math.inf, high=math.inf)
        self.learnable_bias = check_bool("learnable_bias", learnable_bias)
        bias = torch.tensor(init_bias)
        if self.learnable_bias:
            self.logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("logit_bias", bias)

    def compute(self, image_features, text_features, logit_scale, image_ids, text_image_ids, columns, negatives=None, negative_ids=None):
        bias = self.logit_bias.to(image_features.dtype)
        out = siglip_loss(
            image_features, text_features, logit_scale, image_ids, text_image_ids,
            logit_bias=bias, columns=columns, negatives=negatives, negative_ids=negative_ids,
        )
        out["logit_bias"] = self.logit_bias.detach()
        return out

    def extra_repr(self) -> str:
        return f"learnable_bias={self.learnable_bias}, {super().extra_repr()}"
