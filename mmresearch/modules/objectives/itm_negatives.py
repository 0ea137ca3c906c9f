"""Negatives for image-text matching: for each pair, a partner from another image of the batch."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def negative_weights(image_ids: Tensor, similarity: Optional[Tensor] = None, column_ids: Optional[Tensor] = None) -> Tensor:
    """``[B, G]`` probability of drawing column ``j`` as row ``i``'s negative partner.

    Args:
        image_ids: ``[B]`` image id of each row.
        similarity: optional ``[B, G]`` logits (e.g. first-stage similarities times the logit
            scale ``1 / tau``): ``softmax(similarity[i])`` over the columns with another image id;
            uniform over them when None.
        column_ids: ``[G]`` image ids of the columns; None: the rows themselves.

    Returns:
        ``[B, G]`` float rows summing to 1, zero on every column sharing row ``i``'s image id; an
        all-zero row where every column shares it (no valid partner).
    """
    columns = image_ids if column_ids is None else column_ids
    valid = image_ids[:, None] != columns[None, :]  # [B, G]
    if similarity is None:
        return valid.float() / valid.sum(dim=1, keepdim=True).clamp_min(1)
    logits = similarity.float().masked_fill(~valid, float("-inf"))
    return torch.softmax(logits, dim=1).nan_to_num(0.0)  # rows with no valid partner -> 0


def sample_negative_partners(
    image_ids: Tensor,
    similarity: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    column_ids: Optional[Tensor] = None,
) -> Tensor:
    """For every row ``i`` pick a column ``j`` whose image id differs from row ``i``'s, drawn with
    the probabilities of :func:`negative_weights`.

    Args:
        image_ids: ``[B]`` image id of each pair (captions of one image share it).
        column_ids: ``[G]`` image ids of the candidates (e.g. the pairs gathered from every DDP
            rank); None: the rows themselves (``G = B``).
        similarity: optional ``[B, G]`` logits of row ``i``'s text (or image) against row ``j``'s
            image (or text), e.g. first-stage similarities times the logit scale: ``j`` is then
            drawn with probability ``softmax(similarity[i])`` over the valid columns (hard
            negatives, as ALBEF); uniform when None.
        generator: a torch generator for reproducible draws.

    Returns:
        ``[B]`` long column indices; ``-1`` for a row with no valid partner (every row shares its
        image id). A returned partner never has the same image id: it is never a positive.
    """
    b = image_ids.shape[0]
    weights = negative_weights(image_ids, similarity, column_ids)
    has_partner = weights.sum(dim=1) > 0
    weights = torch.where(has_partner[:, None], weights, torch.ones_like(weights))  # multinomial needs mass
    choice = torch.multinomial(weights, 1, generator=generator).squeeze(1) if b else image_ids.new_empty(0)
    return torch.where(has_partner, choice, torch.full_like(choice, -1))
