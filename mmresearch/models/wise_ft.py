"""WiSE-FT (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models"): weight-space
ensembles ``(1 - alpha) * initial + alpha * fine-tuned`` of a model that started from a pretrained
checkpoint."""

from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import Tensor


def interpolate_weights(initial: Mapping[str, Tensor], finetuned: Mapping[str, Tensor], alpha: float) -> Dict[str, Tensor]:
    """``(1 - alpha) * initial + alpha * finetuned`` for every floating tensor (integer buffers:
    the fine-tuned ones). LoRA adapters interpolate their product: ``B`` is scaled by ``alpha`` and
    ``A`` kept (``W0 + alpha * B A``, the merged weights' interpolation; their initial ``B`` is 0).
    Keys of ``finetuned`` missing from ``initial`` raise a ``KeyError``."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"a WiSE-FT alpha must be in [0, 1], got {alpha!r}")
    out: Dict[str, Tensor] = {}
    for key, tuned in finetuned.items():
        if key not in initial:
            raise KeyError(f"{key} is in the fine-tuned weights but not in the initial ones")
        start = initial[key]
        if not tuned.is_floating_point() or alpha == 1.0:
            out[key] = tuned.clone()
        elif alpha == 0.0 and ".lora_" not in key:
            out[key] = start.to(device=tuned.device, dtype=tuned.dtype).clone()
        elif ".lora_B." in key:
            out[key] = tuned * alpha
        elif ".lora_A." in key:
            out[key] = tuned.clone()
        else:
            out[key] = torch.lerp(start.to(device=tuned.device, dtype=tuned.dtype), tuned, float(alpha))
    return out
