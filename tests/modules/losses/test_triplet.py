"""Triplet (VSE / VSE++) against a plain hand computation; options; config."""

from __future__ import annotations

import pytest
import torch

from mmresearch.modules.losses import TripletLoss

IDS4 = [5, 5, 2, 8]


def hand_triplet(images, texts, ids, margin, max_violation):
    """Hinge on cosine similarities per anchor; hardest or summed negatives; mean over anchors."""
    images, texts = images.tolist(), texts.tolist()
    n = len(images)
    ids = list(range(n)) if ids is None else ids

    def sim(a, b):
        return sum(x * y for x, y in zip(a, b))

    def direction(anchors, candidates):
        total = 0.0
        for i in range(n):
            positive = sim(anchors[i], candidates[i])
            costs = [
                max(0.0, margin - positive + sim(anchors[i], candidates[j]))
                for j in range(n)
                if ids[j] != ids[i]
            ]
            if max_violation:
                total += max(costs, default=0.0)
            else:
                total += sum(costs)
        return total / n

    i2t, t2i = direction(images, texts), direction(texts, images)
    return {"loss": i2t + t2i, "loss_i2t": i2t, "loss_t2i": t2i}


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
@pytest.mark.parametrize("max_violation", [True, False])
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_matches_hand_computation(batch, ids, max_violation, margin):
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    out = TripletLoss(margin=margin, max_violation=max_violation)(images, texts, torch.tensor(7.0), id_t, id_t)
    expected = hand_triplet(images, texts, ids, margin, max_violation)
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key].dim() == 0
        assert out[key].item() == pytest.approx(value, abs=1e-10), key


def test_repeated_ids_change_the_negatives(batch):
    # with a large margin every negative violates, so masking the shared-id caption changes the sum
    images, texts, id_t = batch(n=4, ids=IDS4)
    scale = torch.tensor(1.0)
    loss = TripletLoss(margin=2.0, max_violation=False)
    assert loss(images, texts, scale)["loss"].item() > loss(images, texts, scale, id_t, id_t)["loss"].item()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"margin": -0.1}, ValueError, r"loss\.margin must be in \[0, inf\), got -0\.1"),
        ({"margin": float("inf")}, ValueError, r"loss\.margin"),
        ({"margin": None}, TypeError, r"loss\.margin"),
        ({"max_violation": "true"}, TypeError, r"loss\.max_violation"),
        ({"local_loss": True, "gather_with_grad": False}, ValueError, r"loss\.gather_with_grad"),
    ],
)
def test_invalid_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        TripletLoss(**kwargs)


def test_config(check_config):
    check_config(TripletLoss, "triplet")
