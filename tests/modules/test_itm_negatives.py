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


def test_negatives_from_gathered_columns_are_never_positives():
    # rows: this rank's pairs; columns: every rank's pairs, with a caption of image 7 on both ranks
    rows = torch.tensor([7, 8, 9])
    columns = torch.tensor([7, 8, 9, 7, 10, 11])
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(3, 6, generator=g)
    sim[0, 3] = 50.0  # the other caption of image 7 looks best: still a positive, never drawn
    for _ in range(50):
        picked = sample_negative_partners(rows, sim, generator=g, column_ids=columns)
        assert (columns[picked] != rows).all()
        assert picked[0] != 3
