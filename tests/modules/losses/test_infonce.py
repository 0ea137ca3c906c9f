"""InfoNCE against a plain hand computation; options; config; registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import LOSS_NAMES, make_loss
from mmresearch.modules.losses import InfoNCELoss, infonce_loss

IDS4 = [5, 5, 2, 8]  # rows 0 and 1: two captions of one image


def hand_infonce(images, texts, scale, ids, eps):
    """Symmetric CE with uniform targets over positives, smoothed, written with loops."""
    images, texts = images.tolist(), texts.tolist()
    n = len(images)
    ids = list(range(n)) if ids is None else ids

    def direction(rows, cols):
        total = 0.0
        for i in range(n):
            logits = [scale * sum(a * b for a, b in zip(rows[i], cols[j])) for j in range(n)]
            log_z = math.log(sum(math.exp(x) for x in logits))
            positives = [j for j in range(n) if ids[j] == ids[i]]
            for j in range(n):
                target = 1.0 / len(positives) if j in positives else 0.0
                target = (1 - eps) * target + eps / n
                total -= target * (logits[j] - log_z)
        return total / n

    i2t, t2i = direction(images, texts), direction(texts, images)
    return {"loss": (i2t + t2i) / 2, "loss_i2t": i2t, "loss_t2i": t2i}


@pytest.mark.parametrize("ids", [None, IDS4], ids=["pairs", "repeated_ids"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_hand_computation(batch, ids, eps):
    images, texts, id_t = batch(n=4, d=3, ids=ids)
    scale = torch.tensor(2.5, dtype=torch.float64)
    out = InfoNCELoss(label_smoothing=eps)(images, texts, scale, id_t, id_t)
    expected = hand_infonce(images, texts, 2.5, ids, eps)
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key].dim() == 0
        assert out[key].item() == pytest.approx(value, abs=1e-10), key


def test_without_ids_equals_torch_cross_entropy(batch):
    images, texts, _ = batch(n=5, d=4)
    scale = torch.tensor(3.0, dtype=torch.float64)
    logits = scale * images @ texts.T
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels, label_smoothing=0.2) + F.cross_entropy(logits.T, labels, label_smoothing=0.2)) / 2
    out = infonce_loss(images, texts, scale, label_smoothing=0.2)
    torch.testing.assert_close(out["loss"], expected)


def test_distinct_ids_equal_no_ids(batch):
    images, texts, _ = batch(n=4)
    scale = torch.tensor(2.0, dtype=torch.float64)
    ids = torch.tensor([10, 3, 4, 11])
    torch.testing.assert_close(infonce_loss(images, texts, scale)["loss"], infonce_loss(images, texts, scale, ids, ids)["loss"])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"label_smoothing": 1.5}, ValueError, r"loss\.label_smoothing must be in \[0, 1\), got 1\.5"),
        ({"label_smoothing": 1.0}, ValueError, r"loss\.label_smoothing"),
        ({"label_smoothing": -0.1}, ValueError, r"loss\.label_smoothing"),
        ({"label_smoothing": "0.1"}, TypeError, r"loss\.label_smoothing"),
        ({"local_loss": "yes"}, TypeError, r"loss\.local_loss"),
        ({"gather_with_grad": 1}, TypeError, r"loss\.gather_with_grad"),
        ({"local_loss": True, "gather_with_grad": False}, ValueError, r"loss\.gather_with_grad"),
    ],
)
def test_invalid_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        InfoNCELoss(**kwargs)


def test_global_loss_without_grad_gather_is_allowed():
    module = InfoNCELoss(local_loss=False, gather_with_grad=False)
    assert not module.local_loss and not module.gather_with_grad


def test_invalid_inputs(batch):
    images, texts, _ = batch(n=4)
    scale = torch.tensor(1.0, dtype=torch.float64)
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match="same shape"):
        loss(images, texts[:3], scale)
    with pytest.raises(ValueError, match="given together"):
        loss(images, texts, scale, torch.arange(4), None)
    with pytest.raises(ValueError, match=r"image_ids must be \[N\]"):
        loss(images, texts, scale, torch.arange(3), torch.arange(3))
    with pytest.raises(TypeError, match="integer"):
        loss(images, texts, scale, torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="scalar"):
        loss(images, texts, torch.ones(2))


def test_config(check_config):
    check_config(InfoNCELoss, "infonce")


def test_every_loss_config_builds_its_loss_under_its_name():
    """One way to name a loss: its config (conf/loss/<name>.yaml); the class's ``name`` (used in
    messages) matches it."""
    assert LOSS_NAMES == ["infonce", "margin", "ntxent", "siglip", "triplet"]
    for name in LOSS_NAMES:
        assert make_loss(name).name == name
    loss = make_loss("infonce", label_smoothing=0.1)
    assert isinstance(loss, InfoNCELoss) and loss.label_smoothing == 0.1


# ---- NegCLIP hard negatives -------------------------------------------------------------------


def _hand_infonce_with_negatives(img, txt, neg, scale, ids, neg_ids):
    """Plain loops: i2t rows over [texts, negatives] with uniform targets on positives; t2i as usual."""
    import math as _m

    n = img.shape[0]
    i2t = 0.0
    for i in range(n):
        cols = [float(scale * img[i] @ txt[j]) for j in range(n)] + [float(scale * img[i] @ neg[m]) for m in range(len(neg))]
        pos = [j for j in range(n) if ids[j] == ids[i]] + [n + m for m in range(len(neg)) if neg_ids[m] == ids[i]]
        lse = _m.log(sum(_m.exp(c) for c in cols))
        i2t += -sum(cols[j] - lse for j in pos) / len(pos)
    t2i = 0.0
    for j in range(n):
        cols = [float(scale * txt[j] @ img[i]) for i in range(n)]
        pos = [i for i in range(n) if ids[i] == ids[j]]
        lse = _m.log(sum(_m.exp(c) for c in cols))
        t2i += -sum(cols[i] - lse for i in pos) / len(pos)
    return (i2t / n + t2i / n) / 2, i2t / n, t2i / n


def test_hard_negatives_are_extra_i2t_columns_and_can_be_positives():
    import torch.nn.functional as F

    from mmresearch.modules.losses import InfoNCELoss

    g = torch.Generator().manual_seed(3)
    img, txt, neg = (F.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=1) for _ in range(3))
    ids = torch.tensor([0, 1, 1, 2])
    neg_ids = torch.tensor([-1, 2, -1, -1])  # negative 1 is in fact true of image id 2
    out = InfoNCELoss()(img, txt, torch.tensor(5.0, dtype=torch.float64), ids, ids,
                        hard_negative_text_features=neg, hard_negative_image_ids=neg_ids)
    loss, i2t, t2i = _hand_infonce_with_negatives(img, txt, neg, 5.0, ids.tolist(), neg_ids.tolist())
    assert float(out["loss"]) == pytest.approx(loss, abs=1e-10)
    assert float(out["loss_i2t"]) == pytest.approx(i2t, abs=1e-10)
    assert float(out["loss_t2i"]) == pytest.approx(t2i, abs=1e-10)
    # without ids for the negatives, all are plain negatives, and the i2t loss can only grow
    plain = InfoNCELoss()(img, txt, torch.tensor(5.0, dtype=torch.float64), ids, ids, hard_negative_text_features=neg)
    base = InfoNCELoss()(img, txt, torch.tensor(5.0, dtype=torch.float64), ids, ids)
    assert float(plain["loss_i2t"]) > float(base["loss_i2t"])
    assert float(plain["loss_t2i"]) == pytest.approx(float(base["loss_t2i"]))


def test_every_built_in_loss_takes_hard_negatives_and_others_refuse_them():
    from mmresearch.modules.losses import ContrastiveLoss

    assert all(make_loss(name).supports_hard_negatives for name in LOSS_NAMES)

    class NoNegatives(ContrastiveLoss):
        name = "no_negatives"

    x = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    with pytest.raises(ValueError, match="'no_negatives' does not take hard-negative captions; set data.train_negatives=false"):
        NoNegatives()(x, x, torch.tensor(10.0), hard_negative_text_features=x)


@pytest.mark.parametrize("neg_ids", [torch.tensor([0, 1]), torch.tensor([0.0, 1.0, 2.0])], ids=["short", "float"])
def test_hard_negative_ids_must_be_integer_m(neg_ids):
    x = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    with pytest.raises(ValueError, match=r"hard_negative_image_ids must be an integer \[M\] = \[3\]"):
        InfoNCELoss()(x, x, torch.tensor(10.0), hard_negative_text_features=x, hard_negative_image_ids=neg_ids)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("with_negatives", [False, True])
def test_one_positive_fast_path_equals_soft_targets(batch, monkeypatch, eps, with_negatives):
    """Paired batches with distinct ids go through F.cross_entropy with integer labels (as fast
    as open_clip's ClipLoss); values and gradients equal the soft-target path's."""
    import mmresearch.modules.losses.infonce as infonce

    images, texts, _ = batch(n=6, d=5)
    ids = torch.tensor([7, 3, 9, 1, 4, 8])
    negatives = torch.nn.functional.normalize(torch.randn(3, 5, dtype=torch.float64), dim=-1) if with_negatives else None
    negative_ids = torch.tensor([-1, 2, -1]) if with_negatives else None  # true of no row's image
    scale = torch.tensor(2.0, dtype=torch.float64)

    def run():
        i, t = images.clone().requires_grad_(True), texts.clone().requires_grad_(True)
        out = infonce.infonce_loss(i, t, scale, ids, ids, label_smoothing=eps, negatives=negatives, negative_ids=negative_ids)
        out["loss"].backward()
        return out, i.grad, t.grad

    assert infonce._pair_labels(infonce.make_view(images, texts, ids, ids), negatives, negative_ids) is not None
    fast, fast_gi, fast_gt = run()
    monkeypatch.setattr(infonce, "_pair_labels", lambda *a: None)
    soft, soft_gi, soft_gt = run()
    for key in fast:
        torch.testing.assert_close(fast[key], soft[key], rtol=0, atol=1e-12)
    torch.testing.assert_close(fast_gi, soft_gi, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast_gt, soft_gt, rtol=0, atol=1e-12)


def test_fast_path_only_with_one_positive_per_row(batch):
    from mmresearch.modules.losses.infonce import _pair_labels, make_view

    images, texts, _ = batch(n=4, d=3)
    assert _pair_labels(make_view(images, texts, torch.tensor([5, 5, 2, 8]), torch.tensor([5, 5, 2, 8])), None, None) is None
    unique = torch.tensor([5, 6, 2, 8])
    assert _pair_labels(make_view(images, texts, unique, unique), torch.zeros(1, 3), torch.tensor([6])) is None  # negative true of row 1
    assert _pair_labels(make_view(images, texts, unique, unique), torch.zeros(1, 3), torch.tensor([-1])).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("ids", [None, IDS4 + [1, 9]], ids=["pairs", "repeated_ids"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("with_negatives", [False, True])
@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_logits_give_the_same_loss_and_gradients(batch, ids, eps, with_negatives, chunk):
    """Chunks of rows under activation checkpointing: the same values and gradients as the full
    logits matrix (features, and the learnable logit scale), for one and several positives."""
    images, texts, id_t = batch(n=6, d=5, ids=ids)
    negatives = torch.nn.functional.normalize(torch.randn(3, 5, dtype=torch.float64), dim=-1) if with_negatives else None
    negative_ids = torch.tensor([-1, 5, -1]) if with_negatives else None  # the 2nd is true of image 5 (rows 0, 1)

    def run(chunk_size):
        i, t = images.clone().requires_grad_(True), texts.clone().requires_grad_(True)
        scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        out = InfoNCELoss(label_smoothing=eps, chunk_size=chunk_size)(i, t, scale, id_t, id_t, negatives, negative_ids)
        out["loss"].backward()
        return out, (i.grad, t.grad, scale.grad)

    full, full_grads = run(None)
    chunked, chunked_grads = run(chunk)
    for key in full:
        torch.testing.assert_close(chunked[key], full[key], rtol=0, atol=1e-12)
    for a, b in zip(chunked_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="loss.chunk_size"):
        InfoNCELoss(chunk_size=0)
