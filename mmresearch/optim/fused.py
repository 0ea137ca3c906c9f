"""``fused: auto`` for torch optimizers: the single-kernel (fused) implementation wherever torch
has one for the parameters' device, else torch's default.

Fused AdamW updates every parameter in one kernel per step instead of a Python loop or a
``foreach`` group of kernels; ``experiments/benchmarks/adamw_step.py`` measures it.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable

IMPLEMENTATION_KEYS = ("fused", "foreach")

import torch

AUTO = "auto"


def fused_supported_devices() -> tuple[str, ...]:
    """Device types torch has fused optimizer kernels for (``cuda``, ``cpu``, ``mps``...)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return tuple(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch: CUDA only
        return ("cuda",)


def resolve_fused(factory: Callable, params: Iterable[torch.Tensor], fp16_with_clipping: bool = False) -> Callable:
    """Replace ``fused="auto"`` in a partial optimizer by ``True`` or ``None`` (torch's default).

    ``True`` when every parameter is a floating-point tensor on a supported device, and not
    ``fp16_with_clipping``: with fp16 loss scaling a fused optimizer unscales the gradients
    inside its step, so Lightning cannot clip them before it (``trainer.gradient_clip_val``).
    Any other ``fused`` value (``true``/``false``/``null``) is passed to torch as given.
    """
    if not isinstance(factory, partial) or factory.keywords.get("fused") != AUTO:
        return factory
    supported = fused_supported_devices()
    ok = not fp16_with_clipping and all(p.device.type in supported and torch.is_floating_point(p) for p in params)
    return partial(factory.func, *factory.args, **{**factory.keywords, "fused": True if ok else None})


def keep_implementation_on_load(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Make ``optimizer.load_state_dict`` keep this optimizer's ``fused``/``foreach`` choice.

    torch copies every saved hyper-parameter into the param groups, implementation flags
    included, while the flags the optimizer derived from them at construction (e.g. whether it
    unscales fp16 gradients itself) stay. A run resumed from a checkpoint of another setting or
    device would then step with a mix of both: with fp16 a non-fused step given the grad
    scaler's scale fails, and a fused flag from a GPU checkpoint breaks on a device without
    fused kernels. The choice made for this run wins; the optimizer state (moments, steps) loads.
    """

    def pre_hook(opt: torch.optim.Optimizer, state_dict: dict) -> dict:
        for group in state_dict.get("param_groups", []):
            for key in IMPLEMENTATION_KEYS:
                if key in opt.defaults:
                    group[key] = opt.defaults[key]
        return state_dict

    optimizer.register_load_state_dict_pre_hook(pre_hook)
    return optimizer
