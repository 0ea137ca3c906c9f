"""Typed outputs of the fusion encoders."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class FusionOutput:
    """What a fusion encoder returns.

    Attributes:
        pooled: ``[B, D]`` the pooled joint representation (ITM, VQA heads).
        text_tokens: ``[B, L, D]`` final hidden states of the text positions (MLM head).
        image_tokens: ``[B, N, D]`` the image tokens: final hidden states of the image [CLS] and
            patches (single stream), or the image features the text attended to (cross-attention).
        mask: ``[B, L + N]`` long attention mask of the joint sequence (single stream), or
            ``[B, L]`` of the text (cross-attention).
    """

    pooled: Tensor
    text_tokens: Tensor
    image_tokens: Tensor
    mask: Tensor
