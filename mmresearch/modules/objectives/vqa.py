"""VQA as multi-label classification over a fixed answer vocabulary: the soft targets and the
training objective (the VQA score metric is :class:`mmresearch.evaluation.vqa.VQAScore`)."""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmresearch.modules.objectives.base import Objective, StepOutputs
from mmresearch.utils.errors import ConfigError


def check_logits_and_targets(logits: Tensor, soft_scores: Tensor) -> None:
    if logits.dim() != 2 or logits.shape != soft_scores.shape:
        raise ValueError(
            f"logits and soft_scores must both be [N, A] of the same shape, got {tuple(logits.shape)} "
            f"and {tuple(soft_scores.shape)}"
        )


def vqa_loss(logits: Tensor, soft_scores: Tensor) -> Tensor:
    """ViLT's VQA loss: ``binary_cross_entropy_with_logits(logits, soft_scores) * A``.

    The mean BCE over all ``N x A`` entries times the number of answers ``A`` is the BCE summed
    over answers and averaged over questions, so its size does not shrink with a larger answer
    vocabulary (ViLT, ``vqa_loss = F.binary_cross_entropy_with_logits(...) * targets.shape[1]``).
    Computed in at least float32 (bf16 logits are upcast).

    Args:
        logits: ``[N, A]``; soft_scores: ``[N, A]`` targets in ``[0, 1]``.

    Returns:
        scalar loss tensor.
    """
    check_logits_and_targets(logits, soft_scores)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    loss = F.binary_cross_entropy_with_logits(logits.to(dtype), soft_scores.to(dtype))
    return loss * soft_scores.shape[1]


class VQAObjective(Objective):
    """Answer classification of the batch's questions (``data.train_questions=true``), soft-score
    BCE (:func:`vqa_loss`). Needs ``model.vqa_head`` and ``model.vqa_logits(batch) -> (logits
    [B * Q, A], soft targets [B * Q, A])``. Term: ``<name>``."""

    requires = ("vqa_head", "vqa_logits")

    def forward(self, model: nn.Module, batch: Any, outputs: StepOutputs) -> Dict[str, Tensor]:
        if batch.question_input_ids is None:
            raise ConfigError(f"model.objectives.{self.name} needs questions in the training batches: set data.train_questions=true")
        logits, soft = model.vqa_logits(batch)
        return {self.name: vqa_loss(logits.float(), soft.float())}
