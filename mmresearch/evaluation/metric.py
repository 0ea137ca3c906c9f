"""A torchmetrics ``Metric`` that gathers embeddings across ranks and scores retrieval exactly."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from mmresearch.evaluation.retrieval import retrieval_metrics


def first_occurrence(ids: Tensor) -> Tensor:
    """Indices of the first occurrence of every distinct id, in id order."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((uniq.numel(),), ids.numel(), dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(ids.numel(), device=ids.device), reduce="amin")
    return first


class RetrievalMetric(Metric):
    """Collects image and caption embeddings (with their ids) and computes retrieval metrics.

    Under DDP the states are concatenated across ranks on ``compute()``; rows repeated by the
    distributed sampler's padding are dropped by id, so every image and caption counts once.

    ``update(image_embeddings [B, E], image_ids [B], text_embeddings [T, E], text_image_ids [T],
    text_ids [T])``. ``compute()`` returns the dict of :func:`retrieval_metrics`.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: Sequence[int] = (1, 5, 10), chunk_size: Optional[int] = 1024, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks, self.chunk_size = tuple(ks), chunk_size
        for name in ("image_embeddings", "image_ids", "text_embeddings", "text_image_ids", "text_ids"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, image_embeddings: Tensor, image_ids: Tensor, text_embeddings: Tensor, text_image_ids: Tensor, text_ids: Tensor) -> None:
        self.image_embeddings.append(image_embeddings.detach().float())
        self.image_ids.append(image_ids.detach().long())
        self.text_embeddings.append(text_embeddings.detach().float())
        self.text_image_ids.append(text_image_ids.detach().long())
        self.text_ids.append(text_ids.detach().long())

    def compute(self) -> Dict[str, float]:
        img_ids = dim_zero_cat(self.image_ids)
        keep_i = first_occurrence(img_ids)
        img_ids, img = img_ids[keep_i], dim_zero_cat(self.image_embeddings)[keep_i]
        keep_t = first_occurrence(dim_zero_cat(self.text_ids))
        txt = dim_zero_cat(self.text_embeddings)[keep_t]
        txt_img_ids = dim_zero_cat(self.text_image_ids)[keep_t]
        rows = torch.searchsorted(img_ids, txt_img_ids)  # img_ids is sorted by torch.unique
        rows = rows.clamp_max(img_ids.numel() - 1)
        missing = img_ids[rows] != txt_img_ids
        if bool(missing.any()):
            raise ValueError(f"captions refer to images that were never embedded: image ids {txt_img_ids[missing][:5].tolist()}")
        return retrieval_metrics(img.cpu(), txt.cpu(), rows.cpu(), ks=self.ks, chunk_size=self.chunk_size)


def add_embedded_batch(metric: RetrievalMetric, model, batch) -> tuple[Tensor, Tensor]:
    """Embed a batch's images and captions with ``model.embed_images`` / ``model.embed_texts`` and
    add them (with their ids) to ``metric``; returns the embeddings ``([B, E], [T, E])``."""
    image_emb = model.embed_images(batch.images)
    text_emb = model.embed_texts(batch.input_ids, batch.attention_mask)
    text_ids = batch.text_ids if batch.text_ids is not None else torch.arange(batch.num_texts, device=image_emb.device)
    metric.update(image_emb, batch.image_ids, text_emb, batch.text_image_ids, text_ids)
    return image_emb, text_emb
