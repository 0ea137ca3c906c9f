"""Properties shared by several losses.

Every loss, computed rank by rank on its local rows against the whole batch (simulated ranks),
averages to the loss and gradients of the whole batch: the algebra behind DDP exactness, checked
in one process (the real 2-process check is test_distributed_equivalence.py)."""

import pytest
import torch

from mmresearch.modules.losses import InfoNCELoss, MarginContrastiveLoss, NTXentLoss, SigLIPLoss, TripletLoss

IDS6 = [7, 7, 3, 9, 1, 9]  # rows 0/1 and 3/5 share an image (3 and 5 on different halves)

CASES = {
    "infonce": (lambda: InfoNCELoss(label_smoothing=0.1), 2.0),
    "siglip": (lambda: SigLIPLoss(init_bias=-2.0).double(), 4.0),
    "triplet_hardest": (lambda: TripletLoss(margin=0.5, max_violation=True), 2.0),
    "triplet_sum": (lambda: TripletLoss(margin=0.5, max_violation=False), 2.0),
    "ntxent": (lambda: NTXentLoss(), 3.0),
    "margin": (lambda: MarginContrastiveLoss(margin=1.2), 3.0),
}


# hard negatives: one per row; the 2nd happens to describe image id 9 (pairs: row 9 does not exist),
# the 5th image id 1 (pairs: row 1)
NEG_IDS6 = [-1, 9, -1, -1, 1, -1]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("ids", [None, IDS6], ids=["pairs", "repeated_ids"])
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("hard_negatives", [False, True], ids=["", "hard_negatives"])
def test_local_rows_average_to_full_batch(batch, simulated_ranks, full_batch, case, ids, world, hard_negatives):
    build, scale = CASES[case]
    images, texts, id_t = batch(n=6, d=3, ids=ids)
    scale = torch.tensor(scale, dtype=torch.float64)
    negatives = {}
    if hard_negatives:
        negatives = {"negatives": batch(n=6, d=3, seed=11)[0], "negative_ids": torch.tensor(NEG_IDS6)}
    module = build()
    local, local_grads = simulated_ranks(module, images, texts, scale, id_t, world, **negatives)
    full, full_grads = full_batch(module, images, texts, scale, id_t, **negatives)
    for key in full:
        torch.testing.assert_close(local[key], full[key])
    assert len(local_grads) == len(full_grads) == 3 + hard_negatives
    for a, b in zip(local_grads, full_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("build", [TripletLoss, MarginContrastiveLoss], ids=["triplet", "margin"])
def test_scale_free_losses_ignore_logit_scale_but_give_it_zero_gradient(batch, build):
    """Cosine-margin losses ignore the temperature; a zero (not missing) gradient keeps DDP happy."""
    images, texts, _ = batch(n=4)
    loss = build()
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    out_a = loss(images, texts, a)
    out_b = loss(images, texts, torch.tensor(50.0, dtype=torch.float64))
    torch.testing.assert_close(out_a["loss"], out_b["loss"])
    out_a["loss"].backward()
    assert a.grad is not None and a.grad.item() == 0.0


@pytest.mark.parametrize("build", [InfoNCELoss, NTXentLoss, SigLIPLoss], ids=["infonce", "ntxent", "siglip"])
def test_scaled_losses_give_the_logit_scale_a_gradient(batch, build):
    images, texts, _ = batch(n=4)
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    build().double()(images, texts, scale)["loss"].backward()
    assert scale.grad is not None and scale.grad.abs().item() > 0
