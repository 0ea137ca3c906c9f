"""The checkpoint a training run resumes from, decided and checked before anything is built.

- ``ckpt_path=<file>``, ``ckpt_path=last`` (the furthest ``last*.ckpt`` of the run's checkpoint
  callbacks: ``checkpoints/last.ckpt``, ``last-step.ckpt``) or ``ckpt_path=hpc`` (the newest
  preemption checkpoint ``hpc_ckpt_<n>.ckpt``): that checkpoint, and an error when there is none
  (Lightning would warn and train from scratch).
- no ``ckpt_path``, ``resume=auto``: the furthest of this run directory's preemption and last
  checkpoints when there is one, else from scratch. For jobs that restart in their own run
  directory: requeued SLURM jobs (``slurm/launch.sh`` passes it), submitit jobs (the
  ``hydra/launcher`` configs set ``MMR_RESUME=auto``, the default of ``resume``).
- no ``ckpt_path``, ``resume=never``: from scratch. Under SLURM Lightning would still resume from a
  preemption checkpoint in the run directory by itself; that is refused with the way out.

"Furthest" is the highest global step, a preemption checkpoint before a last checkpoint of the same
step, then the newest file. The chosen file must be a readable checkpoint of this run's model family.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, List, Optional

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from mmresearch.utils.checkpoint import CONFIG_KEY, HPC_PREFIX, load_checkpoint, resolve_checkpoint_path
from mmresearch.utils.errors import ConfigError

log = logging.getLogger(__name__)

def preemption_checkpoints(root: Path) -> List[Path]:
    """``<root>/hpc_ckpt_<n>.ckpt`` files (where :class:`~mmresearch.callbacks.preemption.PreemptionCheckpoint` writes)."""
    return [p for p in Path(root).glob(f"{HPC_PREFIX}*.ckpt") if re.fullmatch(rf"{HPC_PREFIX}\d+\.ckpt", p.name)]


def checkpoint_dirs(callbacks: Iterable, root: Path) -> List[Path]:
    """The directories the run's ``ModelCheckpoint`` callbacks write to (``<root>/checkpoints``
    for one without a ``dirpath``, Lightning's default without a logger)."""
    dirs = {Path(cb.dirpath) if cb.dirpath else Path(root) / "checkpoints" for cb in callbacks if isinstance(cb, ModelCheckpoint)}
    return sorted(dirs)


def last_checkpoints(callbacks: Iterable) -> List[Path]:
    """The ``last*.ckpt`` files of the run's ``ModelCheckpoint`` callbacks (what Lightning's
    ``ckpt_path="last"`` chooses from)."""
    found = set()
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath and Path(cb.dirpath).is_dir():
            pattern = re.compile(rf"^{re.escape(cb.CHECKPOINT_NAME_LAST)}(-(\d+))?")
            found |= {p for p in Path(cb.dirpath).iterdir() if p.suffix == cb.FILE_EXTENSION and pattern.match(p.stem)}
    return sorted(found)


def furthest(paths: Iterable[Path]) -> Optional[Path]:
    """The checkpoint with the highest global step; a preemption checkpoint wins a tie (saved for
    the restart, at the same step as the step checkpoint written just after it), then the newest.
    Unreadable files (a write cut short by a kill) are passed over with a warning; when no file
    is readable, the error names the first."""
    ranked, errors = [], []
    for path in paths:
        try:
            step = int(load_checkpoint(path, mmap=True).get("global_step", -1))
        except ConfigError as err:
            log.warning("passing over %s", err)
            errors.append(err)
            continue
        ranked.append(((step, path.name.startswith(HPC_PREFIX), path.stat().st_mtime), path))
    if not ranked and errors:
        raise errors[0]
    return max(ranked)[1] if ranked else None


def check_model_family(path: Path, cfg: DictConfig) -> None:
    """A readable checkpoint (one line naming the file otherwise) whose stored run config builds
    the same ``model._target_`` as ``cfg``."""
    stored = (load_checkpoint(path, mmap=True).get(CONFIG_KEY) or {}).get("model") or {}
    theirs, ours = stored.get("_target_"), OmegaConf.select(cfg, "model._target_")
    if theirs and ours and theirs != ours:
        raise ConfigError(f"ckpt_path={path} holds a checkpoint of {theirs} and this run builds {ours} (model._target_): "
                          "a run resumes only its own model family")


def resume_checkpoint(cfg: DictConfig, run_dir: Path, callbacks: List) -> Optional[str]:
    """The checkpoint file to pass to ``trainer.fit`` (see the module docstring), or None."""
    requested = cfg.get("ckpt_path")
    root = Path(OmegaConf.select(cfg, "trainer.default_root_dir") or run_dir)  # where preemption checkpoints go
    if requested == "last":
        path = furthest(last_checkpoints(callbacks))
        if path is None:
            where = ", ".join(str(d) for d in checkpoint_dirs(callbacks, root)) or "this run (no ModelCheckpoint callback)"
            raise ConfigError(f"ckpt_path=last: no last checkpoint (last*.ckpt) in {where} to resume from; "
                              "resume=auto (without ckpt_path) resumes when there is one and starts from scratch otherwise")
    elif requested == "hpc":
        path = furthest(preemption_checkpoints(root))
        if path is None:
            raise ConfigError(f"ckpt_path=hpc: no preemption checkpoint ({HPC_PREFIX}<n>.ckpt) in {root} to resume from")
    elif requested:
        if Path(str(requested)).expanduser().is_dir():
            raise ConfigError(f"ckpt_path={requested!r} is a directory: resume from a checkpoint file, or with ckpt_path=last in the run directory")
        path = resolve_checkpoint_path(requested)
    elif cfg.get("resume", "never") == "auto":
        path = furthest([*preemption_checkpoints(root), *last_checkpoints(callbacks)])
        if path is None:
            return None
    else:
        hpc = sorted(preemption_checkpoints(root))
        if hpc and SLURMEnvironment.detect():
            raise ConfigError(f"resume=never, but {hpc[-1]} is a preemption checkpoint that Lightning resumes from under SLURM: "
                              "set resume=auto to resume from it (slurm/launch.sh does), or use another run directory")
        return None
    check_model_family(path, cfg)
    return str(path)
