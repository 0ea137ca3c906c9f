"""Rebuild a trained model from a checkpoint alone: its stored run config builds the model, the
checkpoint's weights fill it (strict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import lightning as L
from omegaconf import DictConfig, OmegaConf

from mmresearch.models.builder import build_model
from mmresearch.models.upgrade import upgrade_run_config, upgrade_state_dict
from mmresearch.utils.checkpoint import config_container, load_checkpoint, resolve_checkpoint_path, run_config
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build


def load_model(
    path: str | Path, allow_unsafe: bool = False, configure: Optional[Callable[[DictConfig], DictConfig]] = None
) -> Tuple[L.LightningModule, DictConfig, Any]:
    """Rebuild the model of a checkpoint with its weights (strict): ``(model, run config, tokenizer)``.

    ``configure`` maps the stored run config to the one to build (an evaluation's data and model
    changes: :func:`mmresearch.utils.eval_config.eval_run_config`)."""
    checkpoint = load_checkpoint(path, allow_unsafe=allow_unsafe)
    cfg = upgrade_run_config(run_config(checkpoint, path))
    if configure is not None:
        cfg = configure(cfg)
    tokenizer = build(cfg, "tokenizer")
    # the weights come from this checkpoint: the run's `model.init_from` file is not read again
    # (it may be gone, and its share check is about the run's start, not about this checkpoint)
    build_cfg = cfg.copy()
    if OmegaConf.select(build_cfg, "model.init_from") is not None:
        build_cfg.model.init_from = None
    model = build_model(build_cfg, tokenizer, build(build_cfg, "data", tokenizer=tokenizer), strict=False)
    model.run_config = config_container(cfg)
    if "state_dict" not in checkpoint:
        raise ConfigError(f"checkpoint {resolve_checkpoint_path(path)} has no state_dict")
    state = upgrade_state_dict(checkpoint["state_dict"], cfg.model._target_, model.state_dict().keys())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint {resolve_checkpoint_path(path)} does not match the model of its config: "
            f"missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
        )
    model.eval()
    return model, cfg, tokenizer
