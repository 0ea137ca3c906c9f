"""Margin contrastive loss (Hadsell et al.) against a plain hand computation; options; config."""

from __future__ import annotations

import pytest
import torch

from mmresearch.modules.losses import MarginContrastiveLoss

IDS4 = [5, 5, 2, 8]


def hand_margin(images, texts, ids, margin, negatives=None, neg_ids=None):
    """Mean of d^2 over positive pairs + mean of max(0, margin - d)^2 over negative pairs.

    Hard negatives ``[M, D]`` are M more texts: (image, negative) pairs are negative pairs,
    except with the image whose id is ``neg_ids[m]`` (positive); the means run over the
    N x (N + M) pairs."""
    images, texts = images.tolist(), texts.tolist()
    n = len(images)
    ids = list(range(n)) if ids is None else ids
    negatives = [] if negatives is None else negatives.tolist()
    neg_ids = [-1] * len(negatives) if neg_ids is None else neg_ids
    columns, column_ids = texts + negatives, ids + neg_ids
    pos, neg = [], []
    for i in range(n):
        for j in range(len(columns)):
            d = 1.0 - sum(a * b for a, b in zip(images[i], columns[j]))
            if ids[i] == column_ids[j]:
                pos.append(d**2)
            else:
                neg.append(max(0.0, margin - d) ** 2)
    loss_pos = sum(pos) / len(pos)
    loss_neg = sum(neg) / len(neg) if neg else 0.0
    return {"loss": loss_pos + loss_neg, "loss_pos": loss_pos, "loss_neg": loss_neg}


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
@pytest.mark.parametrize("margin", [0.5, 1.5])
def test_matches_hand_computation(batch, ids, margin):
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    out = MarginContrastiveLoss(margin=margin)(images, texts, torch.tensor(3.0), id_t, id_t)
    expected = hand_margin(images, texts, ids, margin)
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key].dim() == 0
        assert out[key].item() == pytest.approx(value, abs=1e-10), key


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
def test_hard_negatives_are_extra_negative_pairs(batch, ids):
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    negatives, _, _ = batch(n=3, d=3, seed=5)
    neg_ids = [-1, -1, 2]  # negative 2 happens to describe image id 2: a positive pair
    out = MarginContrastiveLoss(margin=1.5)(images, texts, torch.tensor(3.0), id_t, id_t,
                                            hard_negative_text_features=negatives,
                                            hard_negative_image_ids=torch.tensor(neg_ids))
    expected = hand_margin(images, texts, ids, 1.5, negatives, neg_ids)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, abs=1e-10), key


def test_hard_negative_by_hand():
    """Two orthogonal pairs (d = 0 for pairs, 1 across) and one hard negative at cosine 0.96 with
    image 0, 0.28 with image 1; margin 0.5. Negative pairs: (0,1), (1,0), (0,neg) d=0.04 ->
    0.46^2, (1,neg) d=0.72 -> 0: loss_neg = 0.2116 / 4, loss_pos = 0. Declared true of image 0
    it is a positive pair: loss_pos = 0.04^2 / 3, loss_neg = 0 / 3."""
    eye = torch.eye(2, dtype=torch.float64)
    neg = torch.tensor([[0.96, 0.28]], dtype=torch.float64)
    loss = MarginContrastiveLoss(margin=0.5)
    assert loss(eye, eye, torch.tensor(1.0))["loss"].item() == 0.0
    out = loss(eye, eye, torch.tensor(1.0), hard_negative_text_features=neg)
    assert out["loss_pos"].item() == 0.0
    assert out["loss_neg"].item() == pytest.approx(0.2116 / 4, abs=1e-12)
    ids = torch.tensor([0, 1])
    out = loss(eye, eye, torch.tensor(1.0), ids, ids, neg, torch.tensor([0]))
    assert out["loss_pos"].item() == pytest.approx(0.04**2 / 3, abs=1e-12)
    assert out["loss_neg"].item() == 0.0


def test_all_positives_gives_zero_negative_term(batch):
    images, texts, _ = batch(n=3)
    ids = torch.tensor([4, 4, 4])
    out = MarginContrastiveLoss()(images, texts, torch.tensor(1.0), ids, ids)
    assert out["loss_neg"].item() == 0.0
    assert out["loss"].item() == pytest.approx(hand_margin(images, texts, [4, 4, 4], 0.5)["loss"], abs=1e-10)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"margin": 0.0}, ValueError, r"loss\.margin must be in \(0, 2\], got 0"),
        ({"margin": 2.5}, ValueError, r"loss\.margin"),
        ({"margin": "big"}, TypeError, r"loss\.margin"),
        ({"local_loss": True, "gather_with_grad": False}, ValueError, r"loss\.gather_with_grad"),
    ],
)
def test_invalid_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        MarginContrastiveLoss(**kwargs)


def test_config(check_config):
    check_config(MarginContrastiveLoss, "margin")
