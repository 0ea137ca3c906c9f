"""Triplet (VSE / VSE++) against a plain hand computation; options; config."""

from __future__ import annotations

import pytest
import torch

from mmresearch.modules.losses import TripletLoss

IDS4 = [5, 5, 2, 8]


def hand_triplet(images, texts, ids, margin, max_violation, negatives=None, neg_ids=None):
    """Hinge on cosine similarities per anchor; hardest or summed negatives; mean over anchors.

    Hard negatives ``[M, D]`` are extra candidate texts of every image anchor (image-to-text
    only), except of the image whose id is ``neg_ids[m]`` (a positive: never a negative)."""
    images, texts = images.tolist(), texts.tolist()
    n = len(images)
    ids = list(range(n)) if ids is None else ids
    negatives = [] if negatives is None else negatives.tolist()
    neg_ids = [-1] * len(negatives) if neg_ids is None else neg_ids

    def sim(a, b):
        return sum(x * y for x, y in zip(a, b))

    def direction(anchors, candidates, cand_ids):
        total = 0.0
        for i in range(n):
            positive = sim(anchors[i], candidates[i])
            costs = [
                max(0.0, margin - positive + sim(anchors[i], candidates[j]))
                for j in range(len(candidates))
                if cand_ids[j] != ids[i]
            ]
            if max_violation:
                total += max(costs, default=0.0)
            else:
                total += sum(costs)
        return total / n

    i2t = direction(images, texts + negatives, ids + neg_ids)
    t2i = direction(texts, images, ids)
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


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
@pytest.mark.parametrize("max_violation", [True, False])
def test_hard_negatives_are_extra_image_to_text_candidates(batch, ids, max_violation):
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    negatives, _, _ = batch(n=3, d=3, seed=5)
    neg_ids = [2, -1, -1]  # negative 0 happens to describe image id 2: never its negative
    out = TripletLoss(margin=1.0, max_violation=max_violation)(
        images, texts, torch.tensor(7.0), id_t, id_t, hard_negative_text_features=negatives,
        hard_negative_image_ids=torch.tensor(neg_ids))
    expected = hand_triplet(images, texts, ids, 1.0, max_violation, negatives, neg_ids)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, abs=1e-10), key


def test_hard_negative_by_hand():
    """Two orthogonal pairs; image 0's hard negative has cosine 0.96 with it and 0.28 with image 1.

    Without it every hinge is max(0, 0.2 - 1 + 0) = 0. With it, image 0 pays
    max(0, 0.2 - 1 + 0.96) = 0.16 and image 1 max(0, 0.2 - 1 + 0.28) = 0: loss_i2t = 0.16 / 2."""
    eye = torch.eye(2, dtype=torch.float64)
    neg = torch.tensor([[0.96, 0.28]], dtype=torch.float64)
    for max_violation in (True, False):
        loss = TripletLoss(margin=0.2, max_violation=max_violation)
        assert loss(eye, eye, torch.tensor(1.0))["loss"].item() == 0.0
        out = loss(eye, eye, torch.tensor(1.0), hard_negative_text_features=neg)
        assert out["loss_i2t"].item() == pytest.approx(0.08, abs=1e-12)
        assert out["loss_t2i"].item() == 0.0 and out["loss"].item() == pytest.approx(0.08, abs=1e-12)
        # the same caption declared true of image 0 is its positive, not a candidate negative
        ids = torch.tensor([0, 1])
        assert loss(eye, eye, torch.tensor(1.0), ids, ids, neg, torch.tensor([0]))["loss"].item() == 0.0


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
