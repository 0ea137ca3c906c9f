"""A FIFO queue of paired image/text features with their image ids (MoCo / ALBEF negatives)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmresearch.utils.errors import ConfigError


class FeatureQueue(nn.Module):
    """Ring buffer of the last ``size`` (image feature, text feature, image id) triples.

    Every rank enqueues the same rows (the momentum features gathered from all ranks), so the
    queues stay identical across ranks without being broadcast. Unlike ALBEF, which starts from
    random vectors, empty slots are never returned: :meth:`contents` gives only the filled rows,
    so early negatives are real ones.

    Args:
        size: ``Q`` rows (ALBEF: 65,536). Any size works: enqueuing wraps around.
        dim: ``D`` feature width.

    Buffers (in the state dict, so a resumed run keeps its queue): ``image_feats [Q, D]``,
    ``text_feats [Q, D]``, ``ids [Q]`` long (-1 for empty), ``ptr`` (next slot) and ``filled``.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"model.queue_size must be a positive int, got {size!r}")
        self.size, self.dim = int(size), int(dim)
        self.register_buffer("image_feats", torch.zeros(size, dim))
        self.register_buffer("text_feats", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, image_feats: Tensor, text_feats: Tensor, ids: Tensor) -> None:
        """Write ``[G, D], [G, D], [G]`` rows at the pointer, overwriting the oldest rows and
        wrapping around the end; with ``G > Q`` only the last ``Q`` rows are kept."""
        g = image_feats.shape[0]
        if text_feats.shape[0] != g or ids.shape[0] != g:
            raise ValueError(f"enqueue needs as many image features, text features and ids, got {g}, {text_feats.shape[0]}, {ids.shape[0]}")
        if g > self.size:
            image_feats, text_feats, ids = image_feats[-self.size :], text_feats[-self.size :], ids[-self.size :]
            g = self.size
        slots = (self.ptr + torch.arange(g, device=self.ptr.device)) % self.size
        self.image_feats[slots] = image_feats.detach().to(self.image_feats.dtype)
        self.text_feats[slots] = text_feats.detach().to(self.text_feats.dtype)
        self.ids[slots] = ids.detach().long()
        self.ptr.copy_((self.ptr + g) % self.size)
        self.filled.copy_(torch.clamp(self.filled + g, max=self.size))

    def contents(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(image_feats [F, D], text_feats [F, D], ids [F])``: the ``F`` filled rows, in slot order."""
        n = int(self.filled)
        return self.image_feats[:n], self.text_feats[:n], self.ids[:n]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
