"""Provenance written into every ``results.json``: git commit, package versions, machine."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional

PACKAGES = ("mmresearch", "torch", "torchvision", "lightning", "hydra-core", "omegaconf", "timm", "transformers",
            "tokenizers", "torchmetrics", "wandb", "numpy")


def git_commit(repo_dir: Optional[Path] = None) -> Optional[str]:
    """The commit of the source tree (with ``-dirty`` when it has uncommitted changes), or None.

    Read once per process and directory: the entry points call it when a run starts
    (``setup_run``), so ``results.json`` names the code the run imported, not a commit made while
    it trained."""
    return _commit_of(str(repo_dir or Path(__file__).resolve().parents[2]))


@functools.lru_cache(maxsize=None)
def _commit_of(cwd: str) -> Optional[str]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> Dict[str, object]:
    import torch

    info: Dict[str, object] = {"python": platform.python_version(), "platform": platform.platform(),
                               "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info
