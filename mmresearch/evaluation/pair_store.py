"""Collects an evaluation split's raw images and captions (not embeddings) across DDP ranks, for
models that score image-caption pairs jointly (fused retrieval)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from mmresearch.evaluation.metric import first_occurrence


@dataclass
class EvalPairs:
    """Every image and caption of a split once, in id order.

    Attributes: ``images [N_i, 3, H, W]``, ``image_ids [N_i]``, ``input_ids [N_t, L]``,
    ``attention_mask [N_t, L]``, ``text_to_image [N_t]`` (row of each caption's image).
    """

    images: Tensor
    image_ids: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    text_to_image: Tensor


class PairStore(Metric):
    """``update(images, image_ids, input_ids, attention_mask, text_image_ids, text_ids)``;
    ``compute() -> EvalPairs`` gathered from all ranks, each image and caption once (the
    distributed sampler's padding repeats are dropped by id). Token rows are right-padded to
    ``max_length`` so batches of different padded lengths concatenate."""

    full_state_update = False

    def __init__(self, max_length: int = 64, pad_token_id: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_length, self.pad_token_id = int(max_length), int(pad_token_id)
        for name in ("images", "image_ids", "input_ids", "attention_mask", "text_image_ids", "text_ids"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, images: Tensor, image_ids: Tensor, input_ids: Tensor, attention_mask: Tensor, text_image_ids: Tensor, text_ids: Tensor) -> None:
        pad = self.max_length - input_ids.shape[1]
        if pad < 0:
            raise ValueError(f"captions of {input_ids.shape[1]} tokens exceed the store's max_length={self.max_length}")
        self.images.append(images.detach())
        self.image_ids.append(image_ids.detach().long())
        self.input_ids.append(F.pad(input_ids.detach().long(), (0, pad), value=self.pad_token_id))
        self.attention_mask.append(F.pad(attention_mask.detach().long(), (0, pad), value=0))
        self.text_image_ids.append(text_image_ids.detach().long())
        self.text_ids.append(text_ids.detach().long())

    def compute(self) -> EvalPairs:
        image_ids = dim_zero_cat(self.image_ids)
        keep_i = first_occurrence(image_ids)
        image_ids = image_ids[keep_i]
        keep_t = first_occurrence(dim_zero_cat(self.text_ids))
        text_image_ids = dim_zero_cat(self.text_image_ids)[keep_t]
        rows = torch.searchsorted(image_ids, text_image_ids).clamp_max(image_ids.numel() - 1)
        if bool((image_ids[rows] != text_image_ids).any()):
            raise ValueError("captions refer to images that were never stored")
        ids, mask = dim_zero_cat(self.input_ids)[keep_t], dim_zero_cat(self.attention_mask)[keep_t]
        width = max(int(mask.sum(1).max()), 1) if mask.numel() else 1  # drop all-padding columns
        return EvalPairs(dim_zero_cat(self.images)[keep_i], image_ids, ids[:, :width], mask[:, :width], rows)
