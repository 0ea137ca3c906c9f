"""Read checkpoints: the checkpoint file and the run config stored in it (the model is rebuilt by
:func:`mmresearch.models.loading.load_model`).

Training stores the resolved run config in every checkpoint (``checkpoint["mmresearch_config"]``,
plain containers only), so a checkpoint alone rebuilds its model. Checkpoints are read with
``torch.load(weights_only=True)``: no code in the file runs. A checkpoint that holds other Python
objects is refused unless ``allow_unsafe=True``; a file that is not a readable checkpoint is one
line naming it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from mmresearch.utils.errors import ConfigError

CONFIG_KEY = "mmresearch_config"
#: file-name prefix of preemption checkpoints (hpc_ckpt_<n>.ckpt, Lightning's SLURM convention)
HPC_PREFIX = "hpc_ckpt_"


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


def unsafe_globals(path: Path) -> Optional[List[str]]:
    """The Python objects (``module.name``) a checkpoint file holds beyond tensors and plain
    containers; ``None`` when the file cannot be read as a ``torch.save`` archive at all."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return None


def load_checkpoint(path: str | Path, allow_unsafe: bool = False, key: str = "ckpt_path", mmap: bool = False) -> Dict[str, Any]:
    """``torch.load`` on the CPU with ``weights_only=True`` (tensors and plain containers only).

    A file that is not a readable checkpoint, or (unless ``allow_unsafe``) one that holds other
    Python objects, is a one-line ConfigError naming ``key`` and the file. ``mmap`` maps the
    tensors instead of reading them (cheap look at a large checkpoint's metadata)."""
    path = resolve_checkpoint_path(path)
    unreadable = f"{key}={path} is not a readable checkpoint: the file is truncated or corrupt, or was not written by torch.save"
    mmap = mmap and zipfile.is_zipfile(path)  # torch maps only its zip format (the default since torch 1.6)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch's messages for corrupt files suggest unsafe loading: never shown
        objects = unsafe_globals(path)
        if not objects:
            raise ConfigError(unreadable) from None
        if not allow_unsafe:
            raise ConfigError(
                f"{key}={path} stores Python objects other than tensors and plain containers ({', '.join(objects[:5])}); "
                "they are not unpickled, since that runs code from the file (mmr-eval's allow_unsafe_checkpoint=true does it)"
            ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception:
        raise ConfigError(unreadable) from None


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
