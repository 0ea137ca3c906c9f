"""Gathering features and ids across processes (contrastive losses, ITM negatives) and the rank/world of this process (data sharding).

The gathers are collectives: call them only when :func:`world_info` reports a world size above
1, on every rank in the same order (the backward of :func:`all_gather_with_grad` is a
collective too).

Shapes: ``N`` rows on this rank, ``W`` ranks, ``G = W * N`` rows in the global batch. Every
rank must hold the same ``N`` (``all_gather`` needs equal sizes).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "world_info",
    "all_gather_with_grad",
    "all_gather_no_grad",
    "all_gather_ids",
    "scale_grad",
    "all_gather_tokens",
]


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _ScaleGrad(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``factor``."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * ctx.factor, None


def scale_grad(x: Tensor, factor: float) -> Tensor:
    """Return ``x`` unchanged, but make the gradient that flows back through it ``factor`` times larger."""
    if factor == 1.0:
        return x
    return _ScaleGrad.apply(x, factor)


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` ``[N, ...]`` of every rank into ``[G, ...]``, rank order, with gradients.

    Uses ``torch.distributed.nn.functional.all_gather``: its backward sums, over all ranks, the
    gradient each rank computed for this rank's slice, so the gradient of this rank's ``x`` holds
    the contribution of every rank's loss.
    """
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x), dim=0)


def all_gather_no_grad(x: Tensor, local_grad_scale: float = 1.0) -> Tensor:
    """Concatenate ``x`` ``[N, ...]`` of every rank into ``[G, ...]`` with a plain ``all_gather``.

    The other ranks' slices carry no gradient; this rank's slice is the live ``x`` itself, so the
    gradient of this rank's own rows still flows (open_clip's ``gather_with_grad=False``).
    ``local_grad_scale`` multiplies the gradient flowing back into that live slice (see
    :class:`~mmresearch.modules.losses.base.ContrastiveLoss` for why the global loss uses ``W``).
    """
    rank, world = world_info()
    if world == 1:
        return scale_grad(x, local_grad_scale)
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = scale_grad(x, local_grad_scale)
    return torch.cat(parts, dim=0)


def all_gather_ids(ids: Tensor) -> Tensor:
    """Concatenate integer ids ``[N]`` of every rank into ``[G]`` (no gradient); identity on one process."""
    _, world = world_info()
    if world == 1:
        return ids
    parts = [torch.empty_like(ids) for _ in range(world)]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts, dim=0)


def all_gather_tokens(tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate token features ``[N, L_r, D]`` and masks ``[N, L_r]`` of every rank into
    ``[G, L, D]`` and ``[G, L]``, with gradients to the features. Ranks may hold different text
    lengths ``L_r`` (batches padded to their longest text): all are right-padded to the longest,
    ``L``, with zero features and mask 0. Identity on one process."""
    _, world = world_info()
    if world == 1:
        return tokens, mask
    lengths = all_gather_ids(torch.tensor([tokens.shape[1]], device=tokens.device))
    pad = int(lengths.max()) - tokens.shape[1]
    if pad:
        tokens = torch.nn.functional.pad(tokens, (0, 0, 0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad))
    return all_gather_with_grad(tokens.contiguous()), all_gather_ids(mask)
