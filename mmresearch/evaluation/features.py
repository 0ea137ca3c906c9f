"""Embed every image of a loader once: the shared first step of zero-shot and linear probes."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Iterable, Optional, Tuple

import torch
from torch import Tensor

from mmresearch.data.batch import ImageTextBatch


def _images_and_labels(batch) -> Tuple[Tensor, Optional[Tensor]]:
    if isinstance(batch, ImageTextBatch):
        return batch.images, batch.labels
    if isinstance(batch, (tuple, list)) and len(batch) == 2:  # (images, labels), e.g. torchvision ImageFolder
        return batch[0], batch[1]
    raise TypeError(f"expected an ImageTextBatch or an (images, labels) pair, got {type(batch).__name__}")


@torch.no_grad()
def extract_image_features(
    embed_images: Callable[[Tensor], Tensor],
    loader: Iterable,
    device: torch.device | str = "cpu",
    autocast: Optional[Callable[[], ContextManager]] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Image embeddings and labels of every batch of ``loader``.

    Args:
        embed_images: ``[B, 3, H, W] -> [B, E]`` (a model's ``embed_images``).
        loader: yields :class:`ImageTextBatch` or ``(images [B, 3, H, W], labels [B] or [B, K])``.
        device: where the images go.
        autocast: a context factory for the forward pass (e.g. the trainer's precision context).

    Returns:
        ``(features [N, E] float32 on the CPU, labels [N] / [N, K] long or None)``.
    """
    features, labels = [], []
    for batch in loader:
        images, batch_labels = _images_and_labels(batch)
        with (autocast or nullcontext)():
            emb = embed_images(images.to(device, non_blocking=True))
        features.append(emb.float().cpu())
        if batch_labels is not None:
            labels.append(torch.as_tensor(batch_labels).long().cpu())
    if not features:
        raise ValueError("the loader yielded no images")
    return torch.cat(features), (torch.cat(labels) if len(labels) == len(features) else None)
