"""ITM negatives never pair a row with an image it describes."""

import torch

from mmresearch.modules.objectives.itm_negatives import negative_weights, sample_negative_partners


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


def test_draws_follow_the_masked_softmax_of_the_logits():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([0, 0, 1, 2, 3])
    logits = 3.0 * torch.randn(5, 5, generator=g)
    expected = torch.zeros(5, 5)
    for i in range(5):  # brute force: exp over the columns of other images, normalised
        others = [j for j in range(5) if ids[j] != ids[i]]
        e = torch.exp(logits[i, others] - logits[i, others].max())
        expected[i, others] = e / e.sum()
    weights = negative_weights(ids, logits)
    torch.testing.assert_close(weights, expected)
    uniform = negative_weights(ids)
    torch.testing.assert_close(uniform[0], torch.tensor([0.0, 0.0, 1 / 3, 1 / 3, 1 / 3]))
    n = 20000  # draws per row: row i repeated n times against the same columns
    draws = sample_negative_partners(ids.repeat_interleave(n), logits.repeat_interleave(n, dim=0), generator=g, column_ids=ids)
    frequencies = torch.stack([torch.bincount(d, minlength=5) for d in draws.view(5, n)]).float() / n
    assert (frequencies - expected).abs().max() < 0.015  # binomial sd <= 0.0036
