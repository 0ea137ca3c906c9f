"""Instantiate config groups with errors that name the config key."""

from __future__ import annotations

import re
from typing import Any, List

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmresearch.utils.errors import ConfigError


def build(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of ``cfg.<key>``; a failure becomes a ConfigError naming ``key``."""
    node = OmegaConf.select(cfg, key)
    if node is None:
        raise ConfigError(f"config key `{key}` is missing or null")
    missing = sorted(OmegaConf.missing_keys(node)) if isinstance(node, DictConfig) else []
    if missing:  # `???` values: instantiate would pass them on as None
        # full key paths when the node sits in a config, paths inside the node otherwise
        full = [m if m.startswith(f"{key}.") else f"{key}.{m}" for m in missing]
        raise ConfigError(f"{', '.join(full)}: required (??? in the config); set {'it' if len(full) == 1 else 'them'} on the command line, e.g. {full[0]}=...")
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        target = node.get("_target_", "?") if isinstance(node, DictConfig) else "?"
        inner = re.search(r"full_key: ([\w.]+)", str(err))  # the nested node that failed (Hydra's key, relative to `key`)
        if inner and inner.group(1):
            name = inner.group(1)
            where = f"`{name if name == key or name.startswith(key + '.') else key + '.' + name}`"
        else:
            where = f"`{key}` (_target_: {target})"
        raise ConfigError(f"could not build {where}: {type(cause).__name__ if cause else ''} {cause or err}") from err


def build_dict(cfg: DictConfig, key: str) -> List[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers); null entries skipped."""
    node = OmegaConf.select(cfg, key)
    if node is None:
        return []
    if not isinstance(node, DictConfig):
        raise ConfigError(f"`{key}` must be a mapping of name -> config, got {type(node).__name__}")
    out: List[Any] = []
    for name, sub in node.items():
        if sub is None:
            continue
        if not isinstance(sub, DictConfig) or "_target_" not in sub:
            raise ConfigError(f"`{key}.{name}` needs a _target_")
        out.append(build(cfg, f"{key}.{name}"))
    return out

