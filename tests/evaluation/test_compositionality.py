"""The compositionality probe counts wins per image and per kind, ties as losses, once per image."""

import pytest
import torch
import torch.nn.functional as F

from mmresearch.evaluation.compositionality import CompositionalityMetric, caption_wins


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float), dim=-1)


def test_caption_wins_by_hand():
    images = _unit([1, 0], [0, 1])
    ids = torch.tensor([10, 20])
    # image 10: captions at cos 1.0 and 0.0 against a negative at cos 0.5 -> 1 of 2 wins
    # image 20: one caption at cos 1.0 against a negative at cos 1.0 -> a tie is a loss
    texts = _unit([1, 0], [0, 1], [0, 1])
    text_image_ids = torch.tensor([10, 10, 20])
    negatives = _unit([0.5, 0.866], [0, 1])
    wins = caption_wins(images, ids, texts, text_image_ids, negatives)
    assert wins.tolist() == [0.5, 0.0]


def test_caption_wins_with_unsorted_ids():
    images = _unit([1, 0], [0, 1])
    ids = torch.tensor([7, 3])
    texts = _unit([0, 1], [1, 0])
    wins = caption_wins(images, ids, texts, torch.tensor([3, 7]), _unit([0, 1], [1, 0]))
    assert wins.tolist() == [1.0, 1.0]


def test_caption_of_missing_image_is_an_error():
    images = _unit([1, 0])
    with pytest.raises(ValueError, match="not in the batch"):
        caption_wins(images, torch.tensor([0]), _unit([1, 0]), torch.tensor([5]), _unit([0, 1]))


def test_metric_per_kind_and_duplicates_counted_once():
    metric = CompositionalityMetric(kind_names=("shape", "colour", "size", "relation"))
    metric.update(torch.tensor([0, 1, 2]), torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 3]))
    # image 2 again (padding of a distributed sampler): must not count twice
    metric.update(torch.tensor([2, 3]), torch.tensor([0.5, 1.0]), torch.tensor([3, 1]))
    out = metric.compute()
    assert out["comp_acc"] == pytest.approx((1.0 + 0.0 + 0.5 + 1.0) / 4)
    assert out["comp_acc_shape"] == pytest.approx(0.5)
    assert out["comp_acc_colour"] == pytest.approx(1.0)
    assert out["comp_acc_relation"] == pytest.approx(0.5)
    assert "comp_acc_size" not in out  # no image with that kind


def test_constant_embeddings_score_zero():
    images = torch.ones(3, 4) / 2
    wins = caption_wins(images, torch.arange(3), torch.ones(6, 4) / 2, torch.tensor([0, 0, 1, 1, 2, 2]), torch.ones(3, 4) / 2)
    assert wins.sum() == 0
