"""Exact image-text retrieval metrics with several captions per image, computed in chunks.

Conventions (the ones of the CLIP/ALBEF literature, checked against torchmetrics in the tests):

- text-to-image (``t2i``): every caption is a query with exactly one relevant image.
- image-to-text (``i2t``): every image is a query whose relevant documents are all of its
  captions. ``R@K`` is the hit rate (at least one of its captions in the top K, torchmetrics'
  ``RetrievalHitRate``), ``MRR`` uses the best-ranked caption, ``mAP`` averages the precision at
  every relevant caption (torchmetrics' ``RetrievalMAP``).
- Ties are counted against the query: a relevant item ranks below every irrelevant item with an
  equal score. A model that outputs constant embeddings gets R@1 = 0, never a lucky 1.
- A NaN score counts as ``-inf`` (the lowest possible score), so NaN embeddings score no better
  than collapsed ones.
- ``rsum`` is the sum of the six recalls (i2t and t2i R@1/5/10), as fractions: between 0 and 6.

Exactness: every rank is counted from the float32 scores of one matrix product per block of
queries, by comparing scores (no sort, no tie-breaking by position), so the metrics are exact
for those scores. ``ranks_from_scores`` is the counting kernel: one comparison pass per block
finds the items scoring at least the lowest relevant score of their query; the other relevant
scores are compared with those candidates only (or, when they are many, with a pass each).

Memory: similarities are computed in chunks of at most ``chunk_size x max(N_images, N_texts)``
float32 scores (``chunk_size`` queries of the longer rows), in one buffer reused by every chunk,
plus a boolean mask of the same shape and temporaries of at most 0.65x the scores.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

_WORD_GROUP = 1024  # booleans summed per group in _count_ge (128 int64 words)


def _workspace_width(n_items: int) -> int:
    return -(-n_items // _WORD_GROUP) * _WORD_GROUP


def _mask_workspace(n_rows: int, n_items: int, device: torch.device) -> Tensor:
    """Scratch for ``_count_ge``: ``[n_rows, n_items rounded up]`` bool, False everywhere."""
    return torch.zeros(n_rows, _workspace_width(n_items), dtype=torch.bool, device=device)


def _count_ge(scores: Tensor, thresholds: Tensor, workspace: Tensor) -> Tensor:
    """``(scores >= thresholds).sum(1)`` for ``scores [C, M]``, ``thresholds [C, 1]`` -> ``[C]`` long.

    The comparison is written into ``workspace`` (see ``_mask_workspace``), whose padding
    columns stay False. Summing booleans casts the whole mask to int64 first, which costs more
    than the comparison; instead, the mask is read as int64 words of 8 booleans (bytes 0 or 1)
    and groups of 128 words are added up: each byte of a sum counts to at most 128, so no byte
    carries into the next, and the bytes of the (few) group sums are added at the end.
    """
    n_rows, n_items = scores.shape
    torch.ge(scores, thresholds, out=workspace[:, :n_items])
    groups = workspace.view(torch.int64).view(n_rows, -1, _WORD_GROUP // 8).sum(-1)  # [C, G]
    return groups.view(torch.uint8).sum(1)


def ranks_from_scores(
    scores: Tensor, relevant: Tensor, *, nan_as_lowest: bool = True, workspace: Optional[Tensor] = None
) -> Tensor:
    """Pessimistic ranks of the relevant items of every query, by counting (no sort).

    Args:
        scores: ``[C, M]`` one row of scores per query.
        relevant: ``[C, P]`` long, the columns of ``scores`` relevant to each query, padded with
            ``-1``. A column must not repeat within a row.
        nan_as_lowest: treat NaN scores as ``-inf`` (costs a pass over ``scores``; pass False
            when the scores are known to hold no NaN).
        workspace: optional scratch from ``_mask_workspace(C, M, device)`` (a bool mask whose
            rows are padded to a multiple of 1024 with False), to reuse memory across calls.

    Returns:
        ``[C, P]`` long: for each relevant item, the number of *irrelevant* items of its row
        whose score is ``>=`` its own (ties count against the query), ``-1`` at the padding.
        That is its 0-based rank among the irrelevant items; the ``j``-th best relevant item
        (1-based, best = fewest irrelevant above) sits at position ``j + count`` of the ranking.
    """
    if scores.dim() != 2 or relevant.dim() != 2 or relevant.shape[0] != scores.shape[0]:
        raise ValueError(f"expected scores [C, M] and relevant [C, P], got {tuple(scores.shape)} and {tuple(relevant.shape)}")
    n_rows, n_items = scores.shape
    n_rel = relevant.shape[1]
    relevant = relevant.long()
    valid = relevant >= 0
    if nan_as_lowest and scores.is_floating_point() and bool(torch.isnan(scores).any()):
        scores = torch.nan_to_num(scores, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    if workspace is None:
        workspace = _mask_workspace(n_rows, n_items, scores.device)
    rel_scores = scores.gather(1, relevant.clamp_min(0))  # [C, P]
    # relevant items (themselves included) >= each relevant score: a [C, P, P] comparison
    rel_ge = ((rel_scores[:, None, :] >= rel_scores[:, :, None]) & valid[:, None, :]).sum(2)
    # Every item >= the lowest relevant score of its row is a candidate, the rest count for no
    # relevant item: one pass counts the candidates, which is the answer at the lowest score.
    thresholds = rel_scores.masked_fill(~valid, float("inf"))  # the padding counts nothing
    lowest = thresholds.amin(1, keepdim=True)  # [C, 1] (+inf for a row without relevant item)
    is_lowest = valid & (thresholds == lowest)
    n_cand = _count_ge(scores, lowest, workspace)  # [C]; leaves the candidate mask in workspace
    all_ge = n_cand[:, None].expand(n_rows, n_rel).clone()
    todo = torch.nonzero((valid & ~is_lowest).any(0)).flatten().tolist()  # slots left to count
    n_total = int(n_cand.sum())
    if todo and n_total <= n_rows * n_items // 8:
        # Candidates are a small part of the scores (a decent model): count on them alone.
        # Temporaries: at most 20 bytes per candidate (the boolean indexing), 0.65x the scores.
        values = scores[workspace[:, :n_items]]  # [K], row by row
        ends = n_cand.cumsum(0)
        starts = ends - n_cand
        count_dtype = torch.int32 if n_total < 2**31 else torch.int64
        for p in todo:
            ge = values >= thresholds[:, p].repeat_interleave(n_cand)
            running = torch.cat([ge.new_zeros(1, dtype=count_dtype), ge.cumsum(0, dtype=count_dtype)])
            all_ge[:, p] = running[ends] - running[starts]
    else:
        # many candidates (a poor model, heavy ties): one counting pass over the scores per slot
        for p in todo:
            all_ge[:, p] = _count_ge(scores, thresholds[:, p : p + 1], workspace)
    all_ge = torch.where(is_lowest, n_cand[:, None], all_ge)
    return torch.where(valid, all_ge - rel_ge, torch.full_like(all_ge, -1))


def retrieval_metrics(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    text_to_image: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: Optional[int] = 1024,
) -> Dict[str, float]:
    """Image-to-text and text-to-image retrieval metrics.

    Args:
        image_embeddings: ``[N_i, E]`` one row per image (normalised for cosine scores).
        text_embeddings: ``[N_t, E]`` one row per caption.
        text_to_image: ``[N_t]`` long, the row of ``image_embeddings`` each caption describes.
        ks: the K of ``R@K``.
        chunk_size: at most ``chunk_size x max(N_i, N_t)`` scores are computed at once
            (``chunk_size`` queries of the direction with the longer rows); ``None`` computes
            all at once. Memory: about 5 bytes per score. The metrics do not depend on it.

    Returns:
        ``{"i2t_R@1": ..., "i2t_MRR": ..., "i2t_mAP": ..., "t2i_R@1": ..., ..., "rsum": ...}``.
    """
    n_img, n_txt = image_embeddings.shape[0], text_embeddings.shape[0]
    if text_to_image.shape != (n_txt,):
        raise ValueError(f"text_to_image must have shape [{n_txt}], got {tuple(text_to_image.shape)}")
    if n_txt and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n_img):
        raise ValueError("text_to_image holds a row outside the image embeddings")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive or None, got {chunk_size}")
    text_to_image = text_to_image.long().cpu()
    caption_slots = _caption_slots(text_to_image, n_img)  # fails early for an image without caption
    img = image_embeddings.float()
    txt = text_embeddings.float()
    device = img.device
    # Scores cannot be NaN when the embeddings are finite and too small to overflow (every
    # partial sum of a dot product is at most |a| |b|); a NaN or inf entry makes a norm NaN or
    # inf and fails the test. Otherwise NaN scores are replaced by -inf, block by block.
    finite = True
    if n_img and n_txt:  # float32 norms: an overflow gives inf, which only disables the shortcut
        finite = float(img.norm(dim=1).max()) * float(txt.norm(dim=1).max()) < 1e38
    # A chunk holds at most chunk_size x max(N_i, N_t) scores in either direction: chunk_size
    # queries of the longer rows, proportionally more of the shorter ones (fewer, larger chunks).
    n_max = max(n_img, n_txt, 1)
    budget = (chunk_size or n_max) * n_max
    step_t2i, step_i2t = max(1, budget // max(n_img, 1)), max(1, budget // max(n_txt, 1))
    # one score buffer and one mask buffer, large enough for a chunk of either direction
    shapes = ((min(step_t2i, n_txt), n_img), (min(step_i2t, n_img), n_txt))  # (queries, items)
    buf = torch.empty(max(q * m for q, m in shapes), dtype=torch.float32, device=device)
    mbuf = torch.zeros(max(q * _workspace_width(m) for q, m in shapes), dtype=torch.bool, device=device)

    def ranks(queries: Tensor, items: Tensor, relevant: Tensor) -> Tensor:
        """``ranks_from_scores`` of ``queries @ items.T`` in the shared buffers."""
        size = queries.shape[0] * items.shape[0]
        sims = torch.mm(queries, items.T, out=buf[:size].view(queries.shape[0], items.shape[0]))
        if not finite:
            torch.nan_to_num_(sims, nan=float("-inf"))
        width = _workspace_width(items.shape[0])
        workspace = mbuf[: queries.shape[0] * width].view(queries.shape[0], width)
        workspace[:, items.shape[0] :] = False  # padding columns (the buffer is shared)
        return ranks_from_scores(sims, relevant, nan_as_lowest=False, workspace=workspace)

    # text -> image: one relevant image per caption.
    t2i_dev = text_to_image.to(device)
    t2i_rank = torch.empty(n_txt, dtype=torch.long)
    for start in range(0, n_txt, step_t2i):
        stop = start + step_t2i
        t2i_rank[start:stop] = ranks(txt[start:stop], img, t2i_dev[start:stop, None])[:, 0].cpu()

    # image -> text: every caption of the image is relevant.
    positives = caption_slots.to(device)  # [N_i, P] caption rows, -1 padding
    i2t_first = torch.empty(n_img, dtype=torch.long)
    i2t_ap = torch.empty(n_img, dtype=torch.float64)
    for start in range(0, n_img, step_i2t):
        stop = start + step_i2t
        pos = positives[start:stop]
        first, ap = _image_to_text_summary(ranks(img[start:stop], txt, pos), pos, n_txt)
        i2t_first[start:stop] = first.cpu()
        i2t_ap[start:stop] = ap.cpu()

    return _summarise(i2t_first, i2t_ap, t2i_rank, ks)


def _summarise(i2t_first: Tensor, i2t_ap: Tensor, t2i_rank: Tensor, ks: Sequence[int]) -> Dict[str, float]:
    """Metrics from the 0-based rank of every query's best relevant item and the i2t APs."""
    out: Dict[str, float] = {}
    for direction, rank in (("i2t", i2t_first), ("t2i", t2i_rank)):
        for k in ks:
            out[f"{direction}_R@{k}"] = float((rank < k).double().mean())
        out[f"{direction}_MRR"] = float((1.0 / (rank.double() + 1)).mean())
    out["i2t_mAP"] = float(i2t_ap.mean())
    out["t2i_mAP"] = out["t2i_MRR"]
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10) if f"{d}_R@{k}" in out)
    return dict(sorted(out.items()))


def _caption_slots(text_to_image: Tensor, n_img: int) -> Tensor:
    """``[N_i, P]`` the caption rows of every image, padded with -1 (``P`` = most captions)."""
    counts = torch.bincount(text_to_image, minlength=n_img)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten()[:5].tolist()
        raise ValueError(f"{int((counts == 0).sum())} images have no caption (rows {missing}...): i2t is undefined for them")
    max_pos = int(counts.max()) if n_img else 1
    order = torch.argsort(text_to_image, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(text_to_image.numel()) - starts[text_to_image[order]]
    positives = torch.full((n_img, max_pos), -1, dtype=torch.long)
    positives[text_to_image[order], slot] = order
    return positives


def _image_to_text_summary(n_neg_ge: Tensor, positives: Tensor, n_txt: int) -> tuple[Tensor, Tensor]:
    """From ``ranks_from_scores`` of image queries: (rank of the best caption ``[C]``, AP ``[C]``)."""
    j = torch.arange(1, positives.shape[1] + 1, device=n_neg_ge.device, dtype=torch.float64)
    n_pos = (positives >= 0).sum(1)
    n_neg_sorted, _ = torch.where(positives >= 0, n_neg_ge, n_txt + 1).sort(dim=1)  # best first, padding last
    precision = j / (j + n_neg_sorted.double())  # j-th relevant caption at rank j + count
    valid_sorted = j[None, :] <= n_pos[:, None]
    return n_neg_sorted[:, 0], (precision * valid_sorted).sum(1) / n_pos


def retrieval_metrics_from_scores(
    t2i_scores: Tensor, i2t_scores: Tensor, text_to_image: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> Dict[str, float]:
    """The metrics of :func:`retrieval_metrics` from given score matrices (fused models, rerankers).

    Args:
        t2i_scores: ``[N_t, N_i]`` score of every image for every caption query.
        i2t_scores: ``[N_i, N_t]`` score of every caption for every image query (the same pair may
            score differently in the two directions, e.g. after a per-direction rerank).
        text_to_image: ``[N_t]`` the image row of each caption.
    """
    n_txt, n_img = t2i_scores.shape
    if tuple(i2t_scores.shape) != (n_img, n_txt) or text_to_image.shape != (n_txt,):
        raise ValueError(f"expected t2i [N_t, N_i], i2t [N_i, N_t], text_to_image [N_t]; got {tuple(t2i_scores.shape)}, {tuple(i2t_scores.shape)}, {tuple(text_to_image.shape)}")
    text_to_image = text_to_image.long().cpu()
    positives = _caption_slots(text_to_image, n_img)
    t2i_rank = ranks_from_scores(t2i_scores.float().cpu(), text_to_image[:, None])[:, 0]
    first, ap = _image_to_text_summary(ranks_from_scores(i2t_scores.float().cpu(), positives), positives, n_txt)
    return _summarise(first, ap, t2i_rank, ks)
