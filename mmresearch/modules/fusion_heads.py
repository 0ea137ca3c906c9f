"""Heads on a fusion encoder's outputs: image-text matching, masked language modelling, VQA."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class ITMHead(nn.Module):
    """Matched / not matched from the pooled joint representation: ``[B, D] -> [B, 2]`` logits
    (column 1 = matched)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden_size, 2)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)

    def score(self, pooled: Tensor) -> Tensor:
        """``[B, D] -> [B]`` match scores computed in float32 outside autocast: ranking many
        candidates needs more than bf16's ~3 significant digits (ties count against a query)."""
        with torch.autocast(pooled.device.type, enabled=False):
            return self.match_score(self.fc(pooled.float()))

    @staticmethod
    def match_score(logits: Tensor) -> Tensor:
        """``[B, 2] -> [B]``: matched minus not-matched logit, the ranking score of retrieval
        (monotonic in the match probability, without its saturation at 0 and 1)."""
        return logits[:, 1] - logits[:, 0]


class MLMHead(nn.Module):
    """BERT's prediction head: ``Linear -> GELU -> LayerNorm -> decoder``; ``[..., D] -> [..., V]``.

    Args:
        hidden_size: ``D``.
        vocab_size: ``V``.
        tied_embeddings: a word-embedding table ``[V, D]`` to share the decoder weight with
            (BERT/ViLT tie them), or None for an untied decoder.
    """

    def __init__(self, hidden_size: int, vocab_size: int, tied_embeddings: Optional[nn.Embedding] = None) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.LayerNorm(hidden_size))
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if tied_embeddings is not None and tuple(tied_embeddings.weight.shape) == (vocab_size, hidden_size):
            self.decoder.weight = tied_embeddings.weight

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden))


class VQAHead(nn.Module):
    """ViLT's VQA classifier over the answer vocabulary: ``Linear(D, 2D) -> LayerNorm -> GELU ->
    Linear(2D, A)``; ``[B, D] -> [B, A]`` logits."""

    def __init__(self, hidden_size: int, num_answers: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden_size, 2 * hidden_size), nn.LayerNorm(2 * hidden_size), nn.GELU(), nn.Linear(2 * hidden_size, num_answers)
        )

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)
