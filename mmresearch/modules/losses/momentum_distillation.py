"""ALBEF's losses with momentum distillation (Li et al., 2021): image-text contrastive against a
feature queue, and masked language modelling, each with soft targets from a momentum model.

Shapes: ``R`` rows on this rank, ``C`` columns (the momentum features of the whole batch of every
rank followed by the queue), ``D`` feature width, ``M`` masked tokens, ``V`` vocabulary.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["distillation_targets", "soft_cross_entropy", "QueueContrastiveLoss", "mlm_distillation_loss"]


def distillation_targets(positives: Tensor, momentum_logits: Optional[Tensor], alpha: float) -> Tensor:
    """``alpha * softmax(momentum_logits) + (1 - alpha) * positives / |positives|`` ``[R, C]``.

    Each row is a probability distribution: the ground truth spreads its mass uniformly over the
    row's positives (every caption of the image, through image ids), and the momentum model's
    prediction is mixed in with weight ``alpha`` (0 or no momentum logits: ground truth only).
    """
    target = positives.float()
    counts = target.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("a row has no positive column: the columns must hold the momentum features of the row's own pair")
    target = target / counts
    if momentum_logits is not None and alpha > 0:
        target = alpha * momentum_logits.float().softmax(dim=1) + (1.0 - alpha) * target
    return target


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-sum_c targets * log_softmax(logits)``; ``[R, C], [R, C] -> []``."""
    return -(targets * logits.float().log_softmax(dim=1)).sum(dim=1).mean()


class QueueContrastiveLoss(nn.Module):
    """ALBEF's image-text contrastive loss (ITC) against momentum features and a queue.

    ``loss_i2t`` is the soft cross entropy of ``s * image_feats @ text_cols^T`` ``[R, C]`` against
    :func:`distillation_targets` with the momentum similarities ``s * image_feats_m @
    text_cols^T``; ``loss_t2i`` likewise for texts against ``image_cols``; ``loss`` is their mean.
    A column is a positive of a row when their image ids are equal (several captions of one image,
    and the same image met again in the queue, all count).

    The loss over this rank's rows, averaged over ranks (DDP's gradient averaging), equals the
    loss over the whole batch on one process: the columns are the same on every rank.
    """

    def forward(
        self,
        image_feats: Tensor,
        text_feats: Tensor,
        image_feats_m: Tensor,
        text_feats_m: Tensor,
        image_ids: Tensor,
        image_cols: Tensor,
        text_cols: Tensor,
        column_ids: Tensor,
        logit_scale: Tensor,
        alpha: float,
    ) -> Dict[str, Tensor]:
        """Args: ``image_feats, text_feats [R, D]`` L2-normalised online features of the rows'
        pairs; ``image_feats_m, text_feats_m [R, D]`` their momentum features; ``image_ids [R]``;
        ``image_cols, text_cols [C, D]`` and ``column_ids [C]``; ``logit_scale`` ``1 / tau``;
        ``alpha`` the distillation weight. Returns ``{"loss", "loss_i2t", "loss_t2i"}``."""
        positives = image_ids[:, None] == column_ids[None, :]  # [R, C]; texts and images of a pair share the id
        with torch.no_grad():
            targets_i2t = distillation_targets(positives, logit_scale * image_feats_m @ text_cols.T, alpha)
            targets_t2i = distillation_targets(positives, logit_scale * text_feats_m @ image_cols.T, alpha)
        loss_i2t = soft_cross_entropy(logit_scale * image_feats @ text_cols.T, targets_i2t)
        loss_t2i = soft_cross_entropy(logit_scale * text_feats @ image_cols.T, targets_t2i)
        return {"loss": (loss_i2t + loss_t2i) / 2, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i}


def mlm_distillation_loss(logits: Tensor, labels: Tensor, momentum_logits: Optional[Tensor], alpha: float) -> Tensor:
    """``(1 - alpha) * CE(logits, labels) + alpha * soft_CE(logits, softmax(momentum_logits))``
    over the ``M`` masked tokens: ``[M, V], [M], [M, V] -> []`` (ALBEF's MLM with distillation)."""
    hard = F.cross_entropy(logits.float(), labels)
    if momentum_logits is None or alpha <= 0:
        return hard
    soft = soft_cross_entropy(logits, momentum_logits.detach().float().softmax(dim=1))
    return (1.0 - alpha) * hard + alpha * soft
