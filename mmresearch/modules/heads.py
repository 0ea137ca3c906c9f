"""Projection heads into the shared embedding space."""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from mmresearch.utils.errors import ConfigError, check_choice

KINDS = ("linear", "mlp")


class ProjectionHead(nn.Module):
    """Linear or two-layer MLP projection, L2-normalised output.

    Args:
        in_dim: encoder output width (filled from the encoder by the model builder).
        out_dim: the shared embedding width.
        kind: ``"linear"`` or ``"mlp"`` (Linear -> GELU -> Dropout -> Linear).
        hidden_dim: MLP hidden width (default: the larger of ``in_dim`` and ``out_dim``).
        dropout: dropout before the projection (and inside the MLP).
        bias: bias in the linear layers.
        normalize: L2-normalise the output (contrastive losses expect unit vectors).

    Shapes: ``forward(x [B, in_dim]) -> [B, out_dim]``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kind: str = "linear",
        hidden_dim: Optional[int] = None,
        dropout: float = 0.0,
        bias: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        check_choice("head.kind", kind, KINDS)
        for key, value in (("in_dim", in_dim), ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"head.{key} must be a positive int, got {value!r}")
        self.in_dim, self.out_dim, self.normalize = int(in_dim), int(out_dim), normalize
        drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if kind == "linear":
            self.proj = nn.Sequential(drop, nn.Linear(in_dim, out_dim, bias=bias))
        else:
            hidden = hidden_dim or max(in_dim, out_dim)
            self.proj = nn.Sequential(
                drop, nn.Linear(in_dim, hidden, bias=bias), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim, bias=bias)
            )

    def forward(self, x: Tensor) -> Tensor:
        z = self.proj(x)
        return F.normalize(z, dim=-1) if self.normalize else z


class L2Normalize(nn.Module):
    """The head of a tower whose encoder already projects into the shared space (a pretrained
    CLIP/SigLIP tower): L2 normalisation only. ``forward(x [B, D]) -> [B, D]``.

    Args:
        in_dim: the encoder's output width (filled by the model builder); ``out_dim`` equals it.
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = self.out_dim = int(in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)
