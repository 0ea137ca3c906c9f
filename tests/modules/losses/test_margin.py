"""Margin contrastive loss (Hadsell et al.) against a plain hand computation; options; config."""

from __future__ import annotations

import pytest
import torch

from mmresearch.modules.losses import MarginContrastiveLoss

IDS4 = [5, 5, 2, 8]


def hand_margin(images, texts, ids, margin):
    """Mean of d^2 over positive pairs + mean of max(0, margin - d)^2 over negative pairs."""
    images, texts = images.tolist(), texts.tolist()
    n = len(images)
    ids = list(range(n)) if ids is None else ids
    pos, neg = [], []
    for i in range(n):
        for j in range(n):
            d = 1.0 - sum(a * b for a, b in zip(images[i], texts[j]))
            if ids[i] == ids[j]:
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
