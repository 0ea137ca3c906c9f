"""Cross-modal NT-Xent against a plain hand computation; options; config."""

from __future__ import annotations

import math

import pytest
import torch

from mmresearch.modules.losses import NTXentLoss

IDS4 = [5, 5, 2, 8]


def hand_ntxent(images, texts, scale, ids):
    """Loop over the 2N anchors; denominator: all but itself and its other same-id positives."""
    n = len(images)
    ids = list(range(n)) if ids is None else ids
    # every embedding as (modality, row, vector)
    items = [("image", i, v) for i, v in enumerate(images.tolist())] + [("text", i, v) for i, v in enumerate(texts.tolist())]

    def logit(a, b):
        return scale * sum(x * y for x, y in zip(a[2], b[2]))

    per_modality = {"image": 0.0, "text": 0.0}
    for anchor in items:
        positive = next(k for k in items if k[0] != anchor[0] and k[1] == anchor[1])
        denominator = 0.0
        for k in items:
            if k is anchor:
                continue
            if k is not positive and ids[k[1]] == ids[anchor[1]]:
                continue  # another positive of the anchor: not a negative
            denominator += math.exp(logit(anchor, k))
        per_modality[anchor[0]] += -(logit(anchor, positive) - math.log(denominator)) / n
    return {
        "loss": (per_modality["image"] + per_modality["text"]) / 2,
        "loss_image": per_modality["image"],
        "loss_text": per_modality["text"],
    }


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_matches_hand_computation(batch, ids, scale):
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    out = NTXentLoss()(images, texts, torch.tensor(scale, dtype=torch.float64), id_t, id_t)
    expected = hand_ntxent(images, texts, scale, ids)
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key].dim() == 0
        assert out[key].item() == pytest.approx(value, abs=1e-10), key


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"local_loss": 0}, TypeError, r"loss\.local_loss"),
        ({"local_loss": True, "gather_with_grad": False}, ValueError, r"loss\.gather_with_grad"),
    ],
)
def test_invalid_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        NTXentLoss(**kwargs)


def test_config(check_config):
    check_config(NTXentLoss, "ntxent")
