"""LoRA adapters on a tower's encoder through ``peft`` (Hu et al., 2021): low-rank updates
``W + (alpha / r) B A`` on the named linear layers, everything else of the encoder frozen; merged
into plain weights for export (:func:`merged_state_dict`)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Mapping

from torch import Tensor, nn

from mmresearch.utils.errors import ConfigError

KEYS = ("r", "alpha", "dropout", "target_modules")


def add_lora(encoder: nn.Module, options: Mapping[str, Any], key: str = "lora") -> nn.Module:
    """Inject LoRA adapters (``peft.inject_adapter_in_model``) into ``encoder`` in place and freeze
    its other parameters. ``options``: ``r``, ``alpha``, ``dropout``, ``target_modules`` (names or
    a regex of the linear layers, as peft takes them). A target that matches no module is a
    :class:`ConfigError` naming ``key``."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # pragma: no cover - peft is a dependency
        raise ConfigError(f"{key} needs peft: pip install peft") from err
    options = dict(options)
    unknown, missing = set(options) - set(KEYS), [k for k in ("r", "target_modules") if options.get(k) is None]
    if unknown or missing:
        raise ConfigError(f"{key}: {'unknown keys ' + str(sorted(unknown)) if unknown else 'missing ' + str(missing)}; takes {list(KEYS)}")
    targets = options["target_modules"]
    targets = list(targets) if not isinstance(targets, str) else targets
    config = LoraConfig(r=int(options["r"]), lora_alpha=float(options.get("alpha") or options["r"]),
                        lora_dropout=float(options.get("dropout") or 0.0), target_modules=targets, bias="none")
    try:
        inject_adapter_in_model(config, encoder)
    except ValueError as err:
        raise ConfigError(f"{key}.target_modules={targets!r} matches no module of {type(encoder).__name__}: {str(err).splitlines()[0]}") from None
    for name, p in encoder.named_parameters():
        p.requires_grad_("lora_" in name)
    return encoder


def merged_state_dict(module: nn.Module) -> Dict[str, Tensor]:
    """``module``'s state dict with every LoRA layer merged into its base weights and named as the
    plain layer (``q_proj.base_layer.weight`` -> ``q_proj.weight``, no ``lora_`` keys); a module
    without adapters gives its own state dict. ``module`` itself is not changed."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover
        return module.state_dict()
    if not any(isinstance(m, LoraLayer) for m in module.modules()):
        return module.state_dict()
    merged = copy.deepcopy(module)
    for sub in merged.modules():
        if isinstance(sub, LoraLayer):
            sub.merge()
    return {k.replace(".base_layer.", "."): v for k, v in merged.state_dict().items() if "lora_" not in k}
