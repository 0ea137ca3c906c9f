"""SigLIP against a plain hand computation; the bias parameter; options; config."""

from __future__ import annotations

import math

import pytest
import torch

from mmresearch.modules.losses import SigLIPLoss, siglip_loss

IDS4 = [5, 5, 2, 8]


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def hand_siglip(images, texts, scale, bias, ids, negatives=None, neg_ids=None):
    """-sum over all (image, text) pairs of logsigmoid(label * logit) / N, and d loss / d bias.

    With hard negatives ``[M, D]``: M extra text columns, label -1 for every image except the
    image whose id is ``neg_ids[m]`` (+1); the normaliser stays N, the number of images."""
    images, texts = images.tolist(), texts.tolist()
    n = len(images)
    ids = list(range(n)) if ids is None else ids
    negatives = [] if negatives is None else negatives.tolist()
    neg_ids = [-1] * len(negatives) if neg_ids is None else neg_ids
    columns = [(t, ids[j]) for j, t in enumerate(texts)] + [(t, neg_ids[m]) for m, t in enumerate(negatives)]
    pos = neg = grad_bias = 0.0
    for i in range(n):
        for text, text_id in columns:
            logit = scale * sum(a * b for a, b in zip(images[i], text)) + bias
            label = 1.0 if ids[i] == text_id else -1.0
            term = -log_sigmoid(label * logit) / n
            if label > 0:
                pos += term
            else:
                neg += term
            # d/db of -log(sigmoid(y * z)) = -y * (1 - sigmoid(y * z))
            grad_bias += -label * (1.0 - 1.0 / (1.0 + math.exp(-label * logit))) / n
    return {"loss": pos + neg, "loss_pos": pos, "loss_neg": neg}, grad_bias


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
@pytest.mark.parametrize("bias", [-10.0, -1.0])
def test_matches_hand_computation(batch, ids, bias):
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    scale = torch.tensor(3.0, dtype=torch.float64)
    module = SigLIPLoss(init_bias=bias).double()
    out = module(images, texts, scale, id_t, id_t)
    expected, grad_bias = hand_siglip(images, texts, 3.0, bias, ids)
    assert set(out) == set(expected) | {"logit_bias"}
    for key, value in expected.items():
        assert out[key].dim() == 0
        assert out[key].item() == pytest.approx(value, abs=1e-10), key
    assert out["logit_bias"].item() == bias and not out["logit_bias"].requires_grad
    out["loss"].backward()
    assert module.logit_bias.grad is not None
    assert module.logit_bias.grad.item() == pytest.approx(grad_bias, abs=1e-10)


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
def test_hard_negatives_are_extra_negative_text_columns(batch, ids):
    """NegCLIP captions: M more columns, -1 for every image (+1 for the image a negative is true of)."""
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    negatives, _, _ = batch(n=3, d=3, seed=7)
    neg_ids = [-1, 2, -1]  # negative 1 happens to describe image id 2 (in both id cases)
    scale = torch.tensor(3.0, dtype=torch.float64)
    module = SigLIPLoss(init_bias=-1.0).double()
    out = module(images, texts, scale, id_t, id_t, hard_negative_text_features=negatives,
                 hard_negative_image_ids=torch.tensor(neg_ids))
    expected, grad_bias = hand_siglip(images, texts, 3.0, -1.0, ids, negatives, neg_ids)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, abs=1e-10), key
    out["loss"].backward()
    assert module.logit_bias.grad.item() == pytest.approx(grad_bias, abs=1e-10)
    # without their ids every negative is a plain negative: only the negative term changes
    plain = module(images, texts, scale, id_t, id_t, hard_negative_text_features=negatives)
    without = module(images, texts, scale, id_t, id_t)
    assert plain["loss"].item() == pytest.approx(hand_siglip(images, texts, 3.0, -1.0, ids, negatives)[0]["loss"], abs=1e-10)
    assert plain["loss_pos"].item() == pytest.approx(without["loss_pos"].item(), abs=1e-12)
    assert plain["loss_neg"].item() > without["loss_neg"].item()


def test_bias_and_scale_gradients(batch):
    images, texts, _ = batch(n=4)
    scale = torch.tensor(10.0, requires_grad=True)
    module = SigLIPLoss()
    assert isinstance(module.logit_bias, torch.nn.Parameter) and module.logit_bias.item() == -10.0
    module(images.float(), texts.float(), scale)["loss"].backward()
    assert module.logit_bias.grad is not None and module.logit_bias.grad.abs().item() > 0
    assert scale.grad is not None and scale.grad.abs().item() > 0


def test_fixed_bias_is_a_buffer(batch):
    images, texts, _ = batch(n=4)
    module = SigLIPLoss(init_bias=-5.0, learnable_bias=False)
    assert list(module.parameters()) == []
    assert "logit_bias" in dict(module.named_buffers())
    out = module(images.float(), texts.float(), torch.tensor(2.0))
    assert out["logit_bias"].item() == -5.0


def test_pure_function_takes_a_number_bias(batch):
    images, texts, _ = batch(n=4)
    scale = torch.tensor(2.0, dtype=torch.float64)
    a = siglip_loss(images, texts, scale, logit_bias=-3.0)["loss"]
    b = siglip_loss(images, texts, scale, logit_bias=torch.tensor(-3.0, dtype=torch.float64))["loss"]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"init_bias": float("nan")}, ValueError, r"loss\.init_bias"),
        ({"init_bias": "x"}, TypeError, r"loss\.init_bias"),
        ({"learnable_bias": 1}, TypeError, r"loss\.learnable_bias"),
        ({"local_loss": True, "gather_with_grad": False}, ValueError, r"loss\.gather_with_grad"),
    ],
)
def test_invalid_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        SigLIPLoss(**kwargs)


def test_config(check_config):
    check_config(SigLIPLoss, "siglip")
