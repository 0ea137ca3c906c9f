"""VQA as multi-label classification over a fixed answer vocabulary: soft targets and score (the
training loss is :mod:`mmresearch.modules.objectives.vqa`).

Conventions (VQA v2, Antol et al. 2015 / Goyal et al. 2017, as trained by ViLT and ALBEF):

- Every question has ``A`` candidate answers (the answer vocabulary). Its target is a *soft
  score* per answer: ``min(1, count / 3)``, ``count`` = how many of the (10) annotators gave that
  answer. An answer given by 3 or more annotators is fully correct.
- The *VQA score* of a prediction (the argmax of the logits) is the soft score of the predicted
  answer, averaged over questions.

Note on the official metric: the VQA evaluation script averages ``min(1, matches / 3)`` over the
10 subsets of 9 of the 10 annotators, which gives, for ``count`` = 0, 1, 2, 3, >= 4 matching
annotators, 0, 0.3, 0.6, 0.9, 1 instead of 0, 1/3, 2/3, 1, 1 (and the script also normalises the
answer strings). :func:`vqa_soft_scores` implements the simpler ``min(1, count / 3)`` used as the
training target (and validation score) by ViLT/ALBEF-style code, so numbers are comparable with
those codebases, slightly above the official metric's.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from mmresearch.evaluation.metric import first_occurrence

__all__ = ["vqa_soft_scores", "one_hot_soft_scores", "vqa_question_scores", "vqa_score", "VQAScore"]


def _check_pair(logits: Tensor, soft_scores: Tensor) -> None:
    if logits.dim() != 2 or logits.shape != soft_scores.shape:
        raise ValueError(
            f"logits and soft_scores must both be [N, A] of the same shape, got {tuple(logits.shape)} "
            f"and {tuple(soft_scores.shape)}"
        )


def vqa_soft_scores(answer_counts: Tensor) -> Tensor:
    """VQA soft targets ``min(1, count / 3)`` (see the module docstring for the official variant).

    Args:
        answer_counts: ``[N, A]`` (any numeric dtype, non-negative): how many annotators gave
            each answer to each question.

    Returns:
        ``[N, A]`` float (the input's floating dtype, else float32) in ``[0, 1]``.
    """
    counts = answer_counts if answer_counts.is_floating_point() else answer_counts.float()
    return (counts / 3.0).clamp(min=0.0, max=1.0)


def one_hot_soft_scores(answers: Tensor, num_answers: int) -> Tensor:
    """Soft targets for data with one ground-truth answer per question: 1 for it, 0 elsewhere.

    Args:
        answers: ``[N]`` integer answer indices in ``[0, num_answers)``; a negative index (e.g.
            ``-100`` or ``-1`` for an answer outside the vocabulary) gives an all-zero row, as for
            VQA questions none of whose annotated answers is in the vocabulary.
        num_answers: ``A``, the size of the answer vocabulary.

    Returns:
        ``[N, A]`` float32.
    """
    if answers.dim() != 1 or answers.dtype.is_floating_point or answers.dtype == torch.bool:
        raise ValueError(f"answers must be a [N] integer tensor, got shape {tuple(answers.shape)} and dtype {answers.dtype}")
    if isinstance(num_answers, bool) or not isinstance(num_answers, int) or num_answers <= 0:
        raise ValueError(f"num_answers must be a positive int, got {num_answers!r}")
    answers = answers.long()
    if answers.numel() and bool((answers >= num_answers).any()):
        raise ValueError(f"answer indices must be < num_answers={num_answers}, got max {int(answers.max())}")
    valid = answers >= 0
    scores = torch.zeros((answers.numel(), num_answers), dtype=torch.float32, device=answers.device)
    scores.scatter_(1, answers.clamp(min=0)[:, None], valid[:, None].float())
    return scores


def vqa_question_scores(logits: Tensor, soft_scores: Tensor) -> Tensor:
    """``[N]``: the soft score of each question's predicted answer (argmax of ``logits [N, A]``;
    ties go to the lowest answer index)."""
    _check_pair(logits, soft_scores)
    predicted = logits.argmax(dim=1, keepdim=True)  # [N, 1]
    return soft_scores.gather(1, predicted).squeeze(1)


def vqa_score(logits: Tensor, soft_scores: Tensor) -> Tensor:
    """VQA score: mean over questions of the soft score of the argmax answer.

    Args:
        logits: ``[N, A]`` answer scores (any monotone transform, e.g. probabilities, gives the same).
        soft_scores: ``[N, A]`` targets in ``[0, 1]`` (:func:`vqa_soft_scores`, :func:`one_hot_soft_scores`).

    Returns:
        scalar float tensor in ``[0, 1]`` (NaN for ``N = 0``).
    """
    return vqa_question_scores(logits, soft_scores).float().mean()


class VQAScore(Metric):
    """Running VQA score (:func:`vqa_score`) over batches and, under DDP, over ranks.

    States: ``question_ids`` and ``scores`` (the soft score of each question's prediction),
    concatenated across processes. ``compute()`` counts every question id once, so the repeats
    of a distributed sampler's padding are dropped (as :class:`~mmresearch.evaluation.metric.RetrievalMetric`
    does).

    ``update(logits [N, A], soft_scores [N, A], question_ids [N])``; ``compute()`` -> scalar
    float32 tensor (NaN before any question was seen).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("question_ids", "scores"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, logits: Tensor, soft_scores: Tensor, question_ids: Tensor) -> None:
        scores = vqa_question_scores(logits.detach(), soft_scores.detach())
        if question_ids.shape != scores.shape:
            raise ValueError(f"question_ids must be [N] = [{scores.numel()}], got {tuple(question_ids.shape)}")
        self.question_ids.append(question_ids.detach().long())
        self.scores.append(scores.to(torch.float64))

    def compute(self) -> Tensor:
        if isinstance(self.scores, list) and not self.scores:  # (a tensor once synced across ranks)
            return torch.tensor(float("nan"))
        keep = first_occurrence(dim_zero_cat(self.question_ids))
        return dim_zero_cat(self.scores)[keep].mean().float()
