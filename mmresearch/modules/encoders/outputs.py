"""Typed outputs of the encoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class EncoderOutput:
    """What an image or text encoder returns.

    Attributes:
        pooled: ``[B, D]`` one vector per input (``D`` is the encoder's ``output_dim``).
        tokens: ``[B, N, D_tok]`` per-token / per-patch features (``N`` tokens), or None when the
            encoder was built with ``output="pooled"``.
        mask: ``[B, N]`` long, 1 for real tokens (text padding is 0), or None for images.
    """

    pooled: Tensor
    tokens: Optional[Tensor] = None
    mask: Optional[Tensor] = None
