"""Parameter groups: weight decay on weight matrices only; per-parameter learning-rate scales."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

from torch import nn


def split_weight_decay(module: nn.Module, weight_decay: float, lr_scales: Optional[Mapping[nn.Parameter, float]] = None,
                       base_lr: Optional[float] = None) -> List[Dict]:
    """Two groups: matrices/convolutions decay; norms, biases, embeddings of rank < 2 and scalars
    (temperature, SigLIP bias) do not, as in CLIP/open_clip. Frozen parameters are left out.

    With ``lr_scales`` (parameter -> factor, e.g. layer-wise decay) each group is split further by
    factor, a group's ``lr`` being ``base_lr * factor`` (parameters without one: ``base_lr``)."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    if not lr_scales:
        return groups
    if base_lr is None:
        raise ValueError("lr_scales need the optimizer's base learning rate")
    scaled: List[Dict] = []
    for group in groups:
        by_scale: Dict[float, list] = {}
        for p in group["params"]:
            by_scale.setdefault(float(lr_scales.get(p, 1.0)), []).append(p)
        for scale, params in sorted(by_scale.items(), reverse=True):
            name = group["name"] if scale == 1.0 else f"{group['name']}_lr{scale:.4g}"
            scaled.append({**group, "params": params, "name": name, "lr": float(base_lr) * scale})
    return scaled
