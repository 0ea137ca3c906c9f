"""Checks of a composed config that run before anything is built.

Hydra passes a value it cannot type through as a string (``optimizer.lr=abc``), and the objects
that use it fail much later, after the data was generated, with a ``TypeError`` that names no key.
:func:`check_config_values` checks the typed values of the run's own keys, the optimizer, the
scheduler and the trainer first, each failure one line naming the key and the value.
:func:`unknown_key_message` is the one line for a key that does not exist, with the key that was
probably meant.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from mmresearch.utils.errors import ConfigError, check_choice

#: ``resume`` values (see conf/train.yaml)
RESUME_MODES = ("auto", "never")

Rule = Tuple[str, Callable[[Any], bool]]  # (what the value must be, test)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _devices(v: Any) -> bool:
    if _int(v):
        return v >= 1 or v == -1
    if isinstance(v, str):  # "auto", "-1" or indices "0,1"
        parts = [part.strip() for part in v.split(",") if part.strip()]
        return v in ("auto", "-1") or (bool(parts) and all(part.isdigit() for part in parts))
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(_int(d) and d >= 0 for d in v)


POSITIVE: Rule = ("a number > 0", lambda v: _number(v) and v > 0)
NON_NEGATIVE: Rule = ("a number >= 0", lambda v: _number(v) and v >= 0)
BOOL: Rule = ("true or false", lambda v: isinstance(v, bool))
INT_AT_LEAST_1: Rule = ("an integer >= 1", lambda v: _int(v) and v >= 1)
OPTIONAL_INT_AT_LEAST_1: Rule = ("null or an integer >= 1", lambda v: v is None or _int(v) and v >= 1)
OPTIONAL_INT_AT_LEAST_0: Rule = ("null or an integer >= 0", lambda v: v is None or _int(v) and v >= 0)
BATCH_LIMIT: Rule = ("null, an integer >= 0 or a fraction in [0, 1]", lambda v: v is None or (_int(v) and v >= 0) or (isinstance(v, float) and 0 <= v <= 1))

#: key -> rule, checked where the key is in the config (null is allowed only where the rule says so)
RULES: Dict[str, Rule] = {
    "seed": ("an integer in [0, 4294967295]", lambda v: _int(v) and 0 <= v <= 2**32 - 1),
    "num_threads": OPTIONAL_INT_AT_LEAST_1,
    "test": BOOL,
    "allow_unsafe_checkpoint": BOOL,
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.eps": POSITIVE,
    "optimizer.momentum": NON_NEGATIVE,
    "optimizer.betas": ("two numbers in [0, 1)", lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v)),
    "scheduler.warmup_ratio": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "scheduler.warmup_steps": OPTIONAL_INT_AT_LEAST_0,
    "scheduler.min_lr_ratio": ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "trainer.max_epochs": ("null or an integer >= -1", lambda v: v is None or _int(v) and v >= -1),
    "trainer.min_epochs": OPTIONAL_INT_AT_LEAST_0,
    "trainer.max_steps": ("an integer >= -1", lambda v: _int(v) and v >= -1),
    "trainer.min_steps": OPTIONAL_INT_AT_LEAST_0,
    "trainer.devices": ("an integer >= 1 (or -1), 'auto', a list of device indices or a string of them", _devices),
    "trainer.num_nodes": INT_AT_LEAST_1,
    "trainer.limit_train_batches": BATCH_LIMIT,
    "trainer.limit_val_batches": BATCH_LIMIT,
    "trainer.limit_test_batches": BATCH_LIMIT,
    "trainer.limit_predict_batches": BATCH_LIMIT,
    "trainer.val_check_interval": ("null, an integer >= 1 or a fraction in (0, 1]",
                                   lambda v: v is None or (_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1)),
    "trainer.check_val_every_n_epoch": OPTIONAL_INT_AT_LEAST_1,
    "trainer.num_sanity_val_steps": ("an integer >= -1", lambda v: _int(v) and v >= -1),
    "trainer.log_every_n_steps": INT_AT_LEAST_1,
    "trainer.accumulate_grad_batches": INT_AT_LEAST_1,
    "trainer.gradient_clip_val": ("null or a number >= 0", lambda v: v is None or _number(v) and v >= 0),
    "trainer.enable_progress_bar": BOOL,
    "trainer.enable_model_summary": BOOL,
    "trainer.enable_checkpointing": BOOL,
    "trainer.sync_batchnorm": BOOL,
    "trainer.benchmark": ("null, true or false", lambda v: v is None or isinstance(v, bool)),
    "trainer.deterministic": ("null, true, false or 'warn'", lambda v: v is None or isinstance(v, bool) or v == "warn"),
}

_ABSENT = object()


def _value(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key``; ``_ABSENT`` when the key is not there, is ``???`` (reported
    where it is used) or does not resolve here (an interpolation only a Hydra app resolves)."""
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception:
        return _ABSENT


def check_config_values(cfg: DictConfig, rules: Optional[Dict[str, Rule]] = None) -> None:
    """Raise ConfigError (one line: key, what it must be, the value) for the first value of
    ``rules`` (default :data:`RULES`) present in ``cfg`` that breaks its rule; ``resume`` must be
    one of :data:`RESUME_MODES`."""
    for key, (what, ok) in (rules or RULES).items():
        value = _value(cfg, key)
        if value is _ABSENT:
            continue
        plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not ok(plain):
            raise ConfigError(f"{key} must be {what}, got {plain!r}")
    resume = _value(cfg, "resume")
    if resume is not _ABSENT:
        check_choice("resume", resume, RESUME_MODES)


def _close(name: str, candidates: Iterable[str]) -> Optional[str]:
    close = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key_message(key: str, cfg: DictConfig, what: str = "a config key", limit: int = 25) -> str:
    """One line for a dotted ``key`` that is not in ``cfg``: the existing key it most likely
    means (each unknown part replaced by its closest sibling), else the keys at the level where
    it goes wrong."""
    parts = key.split(".")
    node: Any = cfg
    fixed = []
    for i, part in enumerate(parts):
        keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        if part in keys:
            fixed.append(part)
        else:
            match = _close(part, keys)
            if match is None:
                where = ".".join(parts[:i]) or "the config"
                shown = ", ".join(sorted(keys)[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
                return f"{key} is not {what}. The keys of {where}: {shown}" if keys else f"{key} is not {what} ({where} has no keys)"
            fixed.append(match)
        child = node._get_node(fixed[-1]) if isinstance(node, DictConfig) else None
        node = child if isinstance(child, DictConfig) else None
    return f"{key} is not {what}. Did you mean {'.'.join(fixed)}?"
