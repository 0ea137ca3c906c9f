"""Parameter groups: weight decay on weight matrices only."""

from __future__ import annotations

from typing import Dict, List

from torch import nn


def split_weight_decay(module: nn.Module, weight_decay: float) -> List[Dict]:
    """Two groups: matrices/convolutions decay; norms, biases, embeddings of rank < 2 and scalars
    (temperature, SigLIP bias) do not, as in CLIP/open_clip. Frozen parameters are left out."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups
