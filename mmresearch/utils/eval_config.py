"""The config an evaluation (``mmr-eval``) runs with: the evaluated run's config, stored in its
checkpoint, with this command's data and model changes.

- ``data.<key>=...`` alone changes keys of the run's data config; each must exist there.
- ``data=<option>`` evaluates on other data: that option's config (its interpolations resolved
  with this machine's ``paths``), except the run's preprocessing (:data:`PREPROCESSING`: image
  size, normalisation, interpolation, crop, text length, padding, lower-casing), kept unless the
  command line sets it. The model saw its images and texts prepared that way; the tokenizer is
  the run's anyway.
- ``model.<key>=...`` changes keys of the run's model config (``model.retrieval.first_stage=none``);
  each must exist there.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict

from mmresearch.utils.config_checks import unknown_key_message
from mmresearch.utils.errors import ConfigError

#: preprocessing an evaluation keeps from the run: where each setting lives in a data config (the
#: built-in data's key, the real-data configs' key). A null (timm's default for ``transform.model``)
#: is carried over only to data of the same kind (``_target_``).
PREPROCESSING: Tuple[Tuple[str, ...], ...] = (
    ("image_size",),
    ("mean", "transform.mean"),
    ("std", "transform.std"),
    ("transform.interpolation",),
    ("transform.crop_pct",),
    ("transform.model",),
    ("transform.processor",),
    ("max_text_length",),
    ("padding",),
    ("lowercase",),
)


def _has(cfg: Any, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return True


def _leaves(node: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``(dotted path, value)`` of every leaf of a plain nested dict (lists and empty dicts are leaves)."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def apply_keys(run_cfg: DictConfig, group: str, changes: Optional[DictConfig]) -> None:
    """Set each leaf of ``changes`` at ``<group>.<path>`` of ``run_cfg``; a key the run's config
    does not have is a ConfigError naming the key it probably means."""
    if changes is None:
        return
    for path, value in _leaves(OmegaConf.to_container(changes, resolve=False)):  # type: ignore[arg-type]
        key = f"{group}.{path}"
        if not _has(run_cfg, key):
            raise ConfigError(unknown_key_message(key, run_cfg, what="a key of the evaluated run's config"))
        OmegaConf.update(run_cfg, key, value, merge=True)


def _given(path: str, given: Iterable[str]) -> bool:
    return any(g == path or g.startswith(f"{path}.") or path.startswith(f"{g}.") for g in given)


def keep_preprocessing(run_data: DictConfig, data: DictConfig, given: Iterable[str] = ()) -> None:
    """Copy the run's :data:`PREPROCESSING` settings into ``data`` (in place), except the keys in
    ``given`` (paths inside ``data``: what the command line set)."""
    given = list(given)
    same_kind = run_data.get("_target_") == data.get("_target_")
    for paths in PREPROCESSING:
        source = next((p for p in paths if _has(run_data, p)), None)
        target = next((p for p in paths if _has(data, p)), None)
        if source is None or target is None or _given(target, given):
            continue
        value = OmegaConf.select(run_data, source)
        if value is None and not same_kind:  # null: a default of the run's kind of data (timm's)
            continue
        OmegaConf.update(data, target, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value, merge=False)


def _resolved_data(data: DictConfig, run_cfg: DictConfig, eval_cfg: DictConfig) -> DictConfig:
    """``data`` with its interpolations resolved in the run's config (``${image_encoder.name}``,
    ``${seed}``) but with this command's ``paths`` (where the data is on this machine)."""
    scope = run_cfg.copy()
    with open_dict(scope):
        if eval_cfg.get("paths") is not None:
            scope.paths = eval_cfg.paths
        scope.data = data
    try:
        return OmegaConf.create(OmegaConf.to_container(scope.data, resolve=True, throw_on_missing=False))
    except Exception:  # an interpolation only the run's own config resolves: resolved there later
        return OmegaConf.create(OmegaConf.to_container(data, resolve=False))


def eval_run_config(run_cfg: DictConfig, eval_cfg: DictConfig, data_keys: Iterable[str] = ()) -> DictConfig:
    """A copy of ``run_cfg`` with ``eval_cfg``'s ``data`` and ``model`` changes (module docstring).

    ``eval_cfg.data`` with a ``_target_`` is another data config (``data=<option>``; ``data_keys``:
    the paths inside it set on the command line); without one, keys of the run's data config."""
    cfg = run_cfg.copy()
    data = eval_cfg.get("data")
    if data is not None and "_target_" in data:
        new = _resolved_data(data, cfg, eval_cfg)
        keep_preprocessing(cfg.data, new, data_keys)
        with open_dict(cfg):
            cfg.data = new
    else:
        apply_keys(cfg, "data", data)
    apply_keys(cfg, "model", eval_cfg.get("model"))
    return cfg
