"""Cross-modal NT-Xent against a plain hand computation; options; config."""

from __future__ import annotations

import math

import pytest
import torch

from mmresearch.modules.losses import NTXentLoss

IDS4 = [5, 5, 2, 8]


def hand_ntxent(images, texts, scale, ids, negatives=None, neg_ids=None):
    """Loop over the 2N anchors; denominator: all but itself and its other same-id positives.

    Hard negatives ``[M, D]`` join the denominator of every image anchor (not of the text
    anchors), except of the image whose id is ``neg_ids[m]`` (another positive: left out)."""
    n = len(images)
    ids = list(range(n)) if ids is None else ids
    negatives = [] if negatives is None else negatives.tolist()
    neg_ids = [-1] * len(negatives) if neg_ids is None else neg_ids
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
        if anchor[0] == "image":
            for m, negative in enumerate(negatives):
                if neg_ids[m] != ids[anchor[1]]:
                    denominator += math.exp(logit(anchor, ("negative", m, negative)))
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


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
def test_hard_negatives_join_the_image_anchors_denominator(batch, ids):
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    negatives, _, _ = batch(n=3, d=3, seed=5)
    neg_ids = [-1, 2, -1]  # negative 1 happens to describe image id 2: not its negative
    scale = torch.tensor(4.0, dtype=torch.float64)
    out = NTXentLoss()(images, texts, scale, id_t, id_t, hard_negative_text_features=negatives,
                       hard_negative_image_ids=torch.tensor(neg_ids))
    expected = hand_ntxent(images, texts, 4.0, ids, negatives, neg_ids)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, abs=1e-10), key
    assert out["loss_text"].item() == pytest.approx(NTXentLoss()(images, texts, scale, id_t, id_t)["loss_text"].item(), abs=1e-12)


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
