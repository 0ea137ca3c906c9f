"""ITM negatives never pair a row with an image it describes."""

import torch

from mmresearch.modules.itm_negatives import sample_negative_partners


def test_partner_never_shares_the_image_id():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    for _ in range(200):
        p = sample_negative_partners(ids, generator=g)
        assert bool((p >= 0).all()) and bool((ids[p] != ids).all())


def test_hard_negatives_follow_similarity_and_exclude_positives():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([0, 0, 1, 2])
    sim = torch.tensor([[9.0, 9.0, 5.0, 0.0]] * 4)  # row 0 and 1 are positives for rows 0/1
    counts = torch.zeros(4)
    for _ in range(500):
        p = sample_negative_partners(ids, sim, generator=g)
        assert bool((ids[p] != ids).all())
        counts[p[0]] += 1
    assert counts[0] == counts[1] == 0 and counts[2] > 450  # softmax(5 vs 0) ~ 0.993


def test_no_partner_gives_minus_one():
    p = sample_negative_partners(torch.tensor([4, 4, 4]))
    assert p.tolist() == [-1, -1, -1]
    p = sample_negative_partners(torch.tensor([4, 4, 4]), torch.randn(3, 3))
    assert p.tolist() == [-1, -1, -1]
