"""ALBEF's ITC against a queue with momentum distillation, and distilled MLM."""

import torch
import torch.nn.functional as F

from mmresearch.modules.losses.infonce import infonce_loss
from mmresearch.modules.losses.momentum_distillation import (
    QueueContrastiveLoss,
    distillation_targets,
    mlm_distillation_loss,
    soft_cross_entropy,
)


def _feats(n, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_targets_are_distributions_spread_over_every_positive():
    ids = torch.tensor([0, 1, 1, 2])
    column_ids = torch.tensor([0, 1, 1, 2, 1, 5])  # image 1 twice in the batch and once in the queue
    positives = ids[:, None] == column_ids[None, :]
    momentum_logits = torch.randn(4, 6)
    for alpha in (0.0, 0.4, 1.0):
        t = distillation_targets(positives, momentum_logits, alpha)
        torch.testing.assert_close(t.sum(1), torch.ones(4))
        assert (t >= 0).all()
    t0 = distillation_targets(positives, momentum_logits, 0.0)
    torch.testing.assert_close(t0[1], torch.tensor([0, 1 / 3, 1 / 3, 0, 1 / 3, 0]))
    torch.testing.assert_close(distillation_targets(positives, momentum_logits, 1.0), momentum_logits.softmax(1))
    mixed = distillation_targets(positives, momentum_logits, 0.4)
    torch.testing.assert_close(mixed, 0.4 * momentum_logits.softmax(1) + 0.6 * t0)


def test_without_queue_or_distillation_it_is_infonce_with_ids():
    img, txt = _feats(6, seed=1), _feats(6, seed=2)
    ids = torch.tensor([3, 4, 4, 5, 6, 7])
    scale = torch.tensor(12.0)
    got = QueueContrastiveLoss()(img, txt, img, txt, ids, img, txt, ids, scale, alpha=0.0)
    want = infonce_loss(img, txt, scale, ids, ids)
    for key in ("loss", "loss_i2t", "loss_t2i"):
        torch.testing.assert_close(got[key], want[key])


def test_rows_split_over_ranks_average_to_the_whole_batch_loss():
    """The DDP property: the columns are the same on every rank, so per-rank losses over halves of
    the rows, averaged, equal the loss over all rows (equal halves)."""
    img, txt, img_m, txt_m = _feats(8, seed=3), _feats(8, seed=4), _feats(8, seed=5), _feats(8, seed=6)
    queue_img, queue_txt = _feats(10, seed=7), _feats(10, seed=8)
    ids = torch.arange(8)
    cols_i, cols_t = torch.cat([img_m, queue_img]), torch.cat([txt_m, queue_txt])
    col_ids = torch.cat([ids, torch.tensor([0, 1, 20, 21, 22, 23, 24, 25, 26, 27])])
    loss = QueueContrastiveLoss()
    scale = torch.tensor(10.0)
    whole = loss(img, txt, img_m, txt_m, ids, cols_i, cols_t, col_ids, scale, 0.4)["loss"]
    halves = [loss(img[s], txt[s], img_m[s], txt_m[s], ids[s], cols_i, cols_t, col_ids, scale, 0.4)["loss"] for s in (slice(0, 4), slice(4, 8))]
    torch.testing.assert_close(whole, sum(halves) / 2)


def test_distillation_changes_the_gradient_only_through_the_targets():
    img = _feats(4, seed=9).requires_grad_(True)
    txt, img_m, txt_m = _feats(4, seed=10), _feats(4, seed=11), _feats(4, seed=12)
    ids = torch.arange(4)
    out = QueueContrastiveLoss()(img, txt, img_m, txt_m, ids, img_m, txt_m, ids, torch.tensor(5.0), 0.4)
    out["loss"].backward()
    assert img.grad is not None and img_m.grad is None and txt_m.grad is None


def test_mlm_distillation_mixes_hard_and_soft_cross_entropy():
    logits, momentum = torch.randn(5, 11), torch.randn(5, 11)
    labels = torch.tensor([1, 2, 3, 4, 5])
    torch.testing.assert_close(mlm_distillation_loss(logits, labels, momentum, 0.0), F.cross_entropy(logits, labels))
    torch.testing.assert_close(mlm_distillation_loss(logits, labels, None, 0.4), F.cross_entropy(logits, labels))
    want = 0.6 * F.cross_entropy(logits, labels) + 0.4 * soft_cross_entropy(logits, momentum.softmax(1))
    torch.testing.assert_close(mlm_distillation_loss(logits, labels, momentum, 0.4), want)
