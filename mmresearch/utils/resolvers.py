"""OmegaConf resolvers of the configs (registered when ``mmresearch.train`` is imported).

``${mmr.run_name:}``: the run's name for experiment trackers: the job's command-line overrides
(``loss=triplet,seed=1``), or ``task_name`` when there are none.
``${mmr.setting:}``: the overrides without the seed (``loss=triplet``): runs that differ only in
their seed share it (W&B's ``job_type``, so its UI can average them); ``default`` for no override.
``${mmr.sweep_group:}``: under ``--multirun`` the sweep's name, ``<job name>/<sweep dir name>``
(every point of one sweep in one W&B group); ``None`` for a single run.
``${mmr.log_version:<dir>}``: ``""`` (log straight into ``<dir>``) for a new run; ``restart<k>`` when
``<dir>/metrics.csv`` already exists, i.e. a resumed or requeued run, whose CSV logger would
otherwise delete the earlier metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf


def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def run_name(default: str = "run") -> str:
    cfg = _hydra()
    if cfg is None:
        return default
    name = cfg.job.override_dirname
    return name or default


def setting(default: str = "default") -> str:
    cfg = _hydra()
    if cfg is None:
        return default
    items = [o for o in cfg.overrides.task if not o.lstrip("+~").startswith("seed=")]
    return ",".join(sorted(items)) or default


def sweep_group() -> Optional[str]:
    from hydra.types import RunMode

    cfg = _hydra()
    if cfg is None or cfg.mode != RunMode.MULTIRUN:
        return None
    return f"{cfg.job.name}/{Path(str(cfg.sweep.dir)).name}"


def log_version(directory: str) -> str:
    root = Path(directory)
    if not (root / "metrics.csv").exists():
        return ""
    k = 1
    while (root / f"restart{k}").exists():
        k += 1
    return f"restart{k}"


def register() -> None:
    OmegaConf.register_new_resolver("mmr.log_version", log_version, replace=True)
    OmegaConf.register_new_resolver("mmr.run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("mmr.setting", setting, replace=True)
    OmegaConf.register_new_resolver("mmr.sweep_group", sweep_group, replace=True)


register()
