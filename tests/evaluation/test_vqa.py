"""VQA soft scores, score, metric and loss against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmresearch.modules.objectives.vqa import vqa_loss
from mmresearch.evaluation.vqa import (
    VQAScore,
    one_hot_soft_scores,
    vqa_question_scores,
    vqa_soft_scores,
    vqa_score,
)

# 3 questions, 4 candidate answers; annotator counts per answer (10 annotators per question):
#   q0: answer 1 by 3 annotators, answer 2 by 1   -> soft [0, 1, 1/3, 0]
#   q1: answer 0 by 2, answer 3 by 1               -> soft [2/3, 0, 0, 1/3]
#   q2: answer 3 by all 10                          -> soft [0, 0, 0, 1]
COUNTS = torch.tensor([[0, 3, 1, 0], [2, 0, 0, 1], [0, 0, 0, 10]])
# predictions: q0 -> answer 2 (scores 1/3), q1 -> answer 0 (2/3), q2 -> answer 1 (0)
# VQA score = (1/3 + 2/3 + 0) / 3 = 1/3
LOGITS = torch.tensor([[0.1, 0.5, 2.0, -1.0], [3.0, 0.0, 1.0, 2.9], [0.0, 1.0, -1.0, 0.5]])


def test_soft_scores_are_min_of_one_and_count_over_three():
    soft = vqa_soft_scores(COUNTS)
    expected = torch.tensor([[0, 1, 1 / 3, 0], [2 / 3, 0, 0, 1 / 3], [0, 0, 0, 1]])
    assert soft.dtype == torch.float32
    torch.testing.assert_close(soft, expected)
    torch.testing.assert_close(vqa_soft_scores(torch.arange(6.0)[None]), torch.tensor([[0, 1 / 3, 2 / 3, 1, 1, 1]]))
    assert vqa_soft_scores(torch.tensor([[1.0]], dtype=torch.float64)).dtype == torch.float64


def test_one_hot_soft_scores():
    soft = one_hot_soft_scores(torch.tensor([2, 0, -100]), num_answers=3)
    torch.testing.assert_close(soft, torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 0, 0]]))  # -100: no answer in the vocabulary
    assert one_hot_soft_scores(torch.tensor([], dtype=torch.long), 4).shape == (0, 4)
    with pytest.raises(ValueError, match="< num_answers=3"):
        one_hot_soft_scores(torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="integer"):
        one_hot_soft_scores(torch.tensor([1.0]), 3)
    with pytest.raises(ValueError, match="positive int"):
        one_hot_soft_scores(torch.tensor([1]), 0)


def test_vqa_score_against_a_hand_computation():
    soft = vqa_soft_scores(COUNTS)
    torch.testing.assert_close(vqa_question_scores(LOGITS, soft), torch.tensor([1 / 3, 2 / 3, 0.0]))
    score = vqa_score(LOGITS, soft)
    assert score.dim() == 0
    assert score.item() == pytest.approx(1 / 3)
    # perfect predictions score the mean of the best soft score per question: (1 + 2/3 + 1) / 3
    assert vqa_score(soft, soft).item() == pytest.approx(8 / 9)
    # single-answer data: accuracy
    answers = torch.tensor([2, 1, 1])
    assert vqa_score(LOGITS, one_hot_soft_scores(answers, 4)).item() == pytest.approx(2 / 3)
    # a tie goes to the lowest index
    assert vqa_score(torch.zeros(1, 4), torch.tensor([[0.0, 1, 1, 1]])).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        vqa_score(LOGITS, soft[:, :3])
    assert math.isnan(vqa_score(torch.zeros(0, 4), torch.zeros(0, 4)).item())


def test_metric_over_two_updates_equals_one_update_on_the_concatenation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g)
    soft = vqa_soft_scores(torch.randint(0, 5, (50, 7), generator=g))
    ids = torch.arange(50) * 3 + 1
    one = VQAScore()
    one.update(logits, soft, ids)
    two = VQAScore()
    two.update(logits[:20], soft[:20], ids[:20])
    two.update(logits[20:], soft[20:], ids[20:])
    assert one.compute().dtype == torch.float32
    torch.testing.assert_close(two.compute(), one.compute())
    torch.testing.assert_close(one.compute(), vqa_score(logits, soft))
    small = VQAScore()
    small.update(LOGITS, vqa_soft_scores(COUNTS), torch.arange(3))
    assert small.compute().item() == pytest.approx(1 / 3)
    small.reset()
    small.update(LOGITS[2:], vqa_soft_scores(COUNTS)[2:], torch.tensor([2]))
    assert small.compute().item() == 0.0


def test_metric_counts_a_repeated_question_once():
    """A distributed sampler pads the split by repeating items: a question seen twice (same id)
    counts once, in any order of updates."""
    soft = vqa_soft_scores(COUNTS)
    metric = VQAScore()
    metric.update(LOGITS[:2], soft[:2], torch.tensor([10, 11]))
    metric.update(LOGITS[[0, 2]], soft[[0, 2]], torch.tensor([10, 12]))  # question 10 again
    assert metric.compute().item() == pytest.approx(1 / 3)  # not (1/3 + 2/3 + 1/3 + 0) / 4
    with pytest.raises(ValueError, match="question_ids"):
        metric.update(LOGITS, soft, torch.tensor([1, 2]))


def test_loss_is_bce_summed_over_answers_and_averaged_over_questions():
    soft = vqa_soft_scores(COUNTS)
    logits = LOGITS.clone().requires_grad_(True)
    loss = vqa_loss(logits, soft)
    p = torch.sigmoid(LOGITS)
    manual = -(soft * torch.log(p) + (1 - soft) * torch.log(1 - p)).sum(dim=1).mean()
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(LOGITS, soft) * 4)
    loss.backward()
    torch.testing.assert_close(logits.grad, (p - soft) / 3)  # d/dx of the mean over 3 questions
    low = vqa_loss(LOGITS.bfloat16(), soft)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(manual.item(), rel=0.02)
    with pytest.raises(ValueError, match="same shape"):
        vqa_loss(LOGITS, soft[:2])
