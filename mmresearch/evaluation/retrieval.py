"""Exact image-text retrieval metrics with several captions per image, computed in chunks.

Conventions (the ones of the CLIP/ALBEF literature, checked against torchmetrics in the tests):

- text-to-image (``t2i``): every caption is a query with exactly one relevant image.
- image-to-text (``i2t``): every image is a query whose relevant documents are all of its
  captions. ``R@K`` is the hit rate (at least one of its captions in the top K, torchmetrics'
  ``RetrievalHitRate``), ``MRR`` uses the best-ranked caption, ``mAP`` averages the precision at
  every relevant caption (torchmetrics' ``RetrievalMAP``).
- Ties are counted against the query: a relevant item ranks below every irrelevant item with an
  equal score. A model that outputs constant embeddings gets R@1 = 0, never a lucky 1.
- ``rsum`` is the sum of the six recalls (i2t and t2i R@1/5/10), as fractions: between 0 and 6.

Memory: similarities are computed ``chunk_size`` queries at a time, so at most
``chunk_size x max(N_images, N_texts)`` scores exist at once.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor


def _count_ge(scores: Tensor, thresholds: Tensor) -> Tensor:
    """For each row, how many of ``scores [C, M]`` are >= each of ``thresholds [C, P]`` -> ``[C, P]``."""
    ordered, _ = scores.sort(dim=1)
    return scores.shape[1] - torch.searchsorted(ordered, thresholds.contiguous(), right=False)


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
        chunk_size: queries scored at once; ``None`` scores all at once.

    Returns:
        ``{"i2t_R@1": ..., "i2t_MRR": ..., "i2t_mAP": ..., "t2i_R@1": ..., ..., "rsum": ...}``.
    """
    n_img, n_txt = image_embeddings.shape[0], text_embeddings.shape[0]
    if text_to_image.shape != (n_txt,):
        raise ValueError(f"text_to_image must have shape [{n_txt}], got {tuple(text_to_image.shape)}")
    if n_txt and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n_img):
        raise ValueError("text_to_image holds a row outside the image embeddings")
    counts = torch.bincount(text_to_image, minlength=n_img)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten()[:5].tolist()
        raise ValueError(f"{int((counts == 0).sum())} images have no caption (rows {missing}...): i2t is undefined for them")
    step = chunk_size or max(n_img, n_txt)
    img = image_embeddings.float()
    txt = text_embeddings.float()

    # text -> image: one relevant image per caption.
    t2i_rank = torch.empty(n_txt, dtype=torch.long)
    for start in range(0, n_txt, step):
        sims = txt[start : start + step] @ img.T  # [C, N_i]
        rows = torch.arange(sims.shape[0])
        target = text_to_image[start : start + step]
        true = sims[rows, target]
        sims[rows, target] = float("-inf")
        t2i_rank[start : start + step] = (sims >= true[:, None]).sum(1).cpu()

    # image -> text: every caption of the image is relevant.
    max_pos = int(counts.max())
    order = torch.argsort(text_to_image, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_txt) - starts[text_to_image[order]]
    positives = torch.full((n_img, max_pos), -1, dtype=torch.long)
    positives[text_to_image[order], slot] = order  # [N_i, P] caption rows, -1 padding
    i2t_first = torch.empty(n_img, dtype=torch.long)
    i2t_ap = torch.empty(n_img, dtype=torch.float64)
    for start in range(0, n_img, step):
        sims = img[start : start + step] @ txt.T  # [C, N_t]
        pos = positives[start : start + step]
        valid = pos >= 0
        pos_scores = torch.where(valid, sims.gather(1, pos.clamp_min(0)), torch.full_like(sims[:, :1], float("-inf")))
        # positives out of the way; padding slots write into an extra, ignored column
        padded = torch.cat([sims, sims.new_full((sims.shape[0], 1), float("-inf"))], dim=1)
        negatives = padded.scatter(1, torch.where(valid, pos, n_txt), float("-inf"))[:, :n_txt]
        pos_sorted, _ = pos_scores.sort(dim=1, descending=True)  # padding (-inf) last
        n_neg_ge = _count_ge(negatives, pos_sorted)  # [C, P]
        j = torch.arange(1, max_pos + 1).expand_as(pos_sorted)
        precision = j / (j + n_neg_ge)
        n_pos = valid.sum(1)
        valid_sorted = j <= n_pos[:, None]
        i2t_first[start : start + step] = n_neg_ge[:, 0].cpu()
        i2t_ap[start : start + step] = ((precision * valid_sorted).sum(1) / n_pos).double().cpu()

    out: Dict[str, float] = {}
    for direction, rank in (("i2t", i2t_first), ("t2i", t2i_rank)):
        for k in ks:
            out[f"{direction}_R@{k}"] = float((rank < k).double().mean())
        out[f"{direction}_MRR"] = float((1.0 / (rank.double() + 1)).mean())
    out["i2t_mAP"] = float(i2t_ap.mean())
    out["t2i_mAP"] = out["t2i_MRR"]
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10) if f"{d}_R@{k}" in out)
    return dict(sorted(out.items()))
