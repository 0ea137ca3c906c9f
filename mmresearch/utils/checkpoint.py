"""Load a trained model back from a checkpoint: the checkpoint file, its run config, the model.

Training stores the resolved run config in every checkpoint (``checkpoint["mmresearch_config"]``,
plain containers only), so a checkpoint alone rebuilds its model. Checkpoints are read with
``torch.load(weights_only=True)``: no code in the file runs. A checkpoint that needs full
unpickling is refused unless ``allow_unsafe=True`` (only for files you trust).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from mmresearch.utils.errors import ConfigError

CONFIG_KEY = "mmresearch_config"


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A ``.ckpt`` file, or a run directory (its best checkpoint from ``results.json``, else
    ``checkpoints/last.ckpt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        results = p / "results.json"
        if results.is_file():
            best = json.loads(results.read_text()).get("best_checkpoint")
            if best and Path(best).is_file():
                return Path(best)
        last = p / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        raise ConfigError(f"ckpt_path={str(path)!r} is a directory with neither results.json naming a checkpoint nor checkpoints/last.ckpt")
    if not p.is_file():
        raise ConfigError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    return p


def load_checkpoint(path: str | Path, allow_unsafe: bool = False) -> Dict[str, Any]:
    """``torch.load`` on the CPU with ``weights_only=True`` (tensors and plain containers only)."""
    path = resolve_checkpoint_path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_unsafe:
            raise ConfigError(
                f"checkpoint {path} holds objects that weights_only loading refuses ({str(err).splitlines()[0]}). "
                "If you trust the file, set allow_unsafe_checkpoint=true to unpickle it fully."
            ) from err
        return torch.load(path, map_location="cpu", weights_only=False)


def run_config(checkpoint: Dict[str, Any], path: str | Path) -> DictConfig:
    """The run config stored in the checkpoint, else ``<run dir>/.hydra/config.yaml`` next to it."""
    stored = checkpoint.get(CONFIG_KEY)
    if stored:
        return OmegaConf.create(stored)
    path = resolve_checkpoint_path(path)
    for run_dir in (path.parent.parent, path.parent):
        candidate = run_dir / ".hydra" / "config.yaml"
        if candidate.is_file():
            return OmegaConf.load(candidate)
    raise ConfigError(f"checkpoint {path} stores no run config and no .hydra/config.yaml was found beside its run directory")


def config_container(cfg: DictConfig) -> Dict[str, Any]:
    """The run config as plain containers (resolved where possible) for storing in checkpoints."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
    except Exception:  # an interpolation that only resolves inside a Hydra app
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def load_model(path: str | Path, allow_unsafe: bool = False, data: Optional[DictConfig] = None) -> Tuple[L.LightningModule, DictConfig, Any]:
    """Rebuild the model of a checkpoint with its weights (strict): ``(model, run config, tokenizer)``.

    ``data`` replaces the run's data config (evaluating on other data)."""
    from mmresearch.models.builder import build_model
    from mmresearch.utils.instantiate import build

    checkpoint = load_checkpoint(path, allow_unsafe=allow_unsafe)
    cfg = run_config(checkpoint, path)
    if data is not None:
        cfg.data = data
    tokenizer = build(cfg, "tokenizer")
    model = build_model(cfg, tokenizer, build(cfg, "data", tokenizer=tokenizer))
    if "state_dict" not in checkpoint:
        raise ConfigError(f"checkpoint {resolve_checkpoint_path(path)} has no state_dict")
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint {resolve_checkpoint_path(path)} does not match the model of its config: "
            f"missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
        )
    model.eval()
    return model, cfg, tokenizer
