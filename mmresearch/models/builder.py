"""Build a model family's LightningModule from the composed config: one factory for all.

A model's config (``conf/model/<name>.yaml``) names the config groups it uses by interpolation:
``towers.image.encoder: ${image_encoder}``, ``objectives.itc.loss: ${loss}``. The builder checks
the composition first (:func:`check_groups_used`): every model-part group that is set (every
top-level node with a ``_target_`` other than the run's own groups) must be used by the model
that is built, and every group it uses must be set; an objective of weight 0 is not built and
does not use its groups. Then Hydra instantiates the model node, its parts recursively, with the
optimizer and scheduler partials and the tokenizer.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, List, Optional

import lightning as L
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build

#: groups the entry points build themselves (not model parts)
RUN_GROUPS = ("data", "tokenizer", "optimizer", "scheduler", "trainer", "model")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w]*)\}")


def fill_data_dependent(cfg: DictConfig, datamodule: Any, tokenizer: Any = None) -> None:
    """Write sizes that come from the data into the config, so the stored run config rebuilds the
    same model: ``model.num_answers`` (VQA heads) and a text encoder's ``vocab_size`` (from the
    tokenizer, where the text encoder config has the key and it is null)."""
    if "num_answers" in cfg.model and cfg.model.num_answers is None and datamodule is not None and hasattr(datamodule, "num_answers"):
        with open_dict(cfg):
            cfg.model.num_answers = int(datamodule.num_answers)
    if tokenizer is not None:
        for node in (cfg.get("text_encoder"), cfg.model):
            _fill_vocab_size(node, len(tokenizer))


def _fill_vocab_size(node: Any, size: int) -> None:
    """``vocab_size: null`` of a text encoder config (the node or one inside it, not through an
    interpolation: those point at the top-level group) set to ``size``."""
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node and "vocab_size" in node and node.vocab_size is None:
        with open_dict(node):
            node.vocab_size = size
    for key in list(node.keys()):
        if not OmegaConf.is_interpolation(node, key):
            _fill_vocab_size(node._get_node(key), size)


def _objective_weight(node: Any, name: str) -> float:
    if node is None:
        return 0.0
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"model.objectives.{name} must be an objective config with a _target_ and a weight (or null)")
    weight = node.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"model.objectives.{name}.weight must be a number >= 0, got {weight!r}")
    return float(weight)


def inactive_objectives(cfg: DictConfig) -> List[str]:
    """Names of ``model.objectives`` entries that are not trained (null or weight 0)."""
    objectives = cfg.model.get("objectives")
    if not isinstance(objectives, DictConfig):
        return []
    return [name for name, node in objectives.items_ex(resolve=False) if _objective_weight(objectives[name], name) <= 0]


def _references(node: Any) -> set:
    """Top-level config keys interpolated (``${key}``) anywhere in ``node`` (unresolved)."""
    found: set = set()
    stack = [OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            found.update(_REFERENCE.findall(item))
    return found


def _choice(cfg: DictConfig, group: str) -> str:
    """``group=<option>`` as the user chose it (Hydra's choices), else the node's class name."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)  # compose(return_hydra_config=True)
    if choices is not None and choices.get(group):
        return f"{group}={choices.get(group)}"
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return f"{group}={choice}"
    except Exception:  # outside a Hydra app
        pass
    target = OmegaConf.select(cfg, f"{group}._target_", default=None)
    return f"{group}={str(target).rsplit('.', 1)[-1]}" if target else group


def check_groups_used(cfg: DictConfig) -> None:
    """Every model-part config group that is set is used by ``cfg.model``, and every group the
    model uses is set; otherwise a :class:`ConfigError` of one line naming the group, the model
    and what the model uses instead. Call it on the composed (unresolved) config."""
    model = cfg.model
    target = model.get("_target_")
    if not target:
        raise ConfigError("model._target_ is missing")
    parts = {key for key in cfg.keys() if key not in RUN_GROUPS and isinstance(cfg.get(key), DictConfig) and "_target_" in cfg[key]}
    inactive = set(inactive_objectives(cfg))
    active_node = OmegaConf.to_container(model, resolve=False)
    objectives = active_node.get("objectives") if isinstance(active_node.get("objectives"), dict) else {}
    inactive_refs = {name: _references(objectives.pop(name)) for name in inactive if name in objectives}
    used = _references(active_node)
    model_name = _choice(cfg, "model")
    for group in sorted(parts - used):
        users = [f"model.objectives.{name}" for name, refs in inactive_refs.items() if group in refs]
        if users:
            why = f"only {', '.join(users)} use{'s' if len(users) == 1 else ''} it, and it is not trained (weight 0)"
        else:
            note = _class_notes(target).get(group)
            uses = sorted(g for g in used if g in cfg and g not in RUN_GROUPS)
            why = note or f"it builds from {', '.join(uses) or 'no config group'}"
        raise ConfigError(f"{_choice(cfg, group)} is not used by {model_name}: {why}. Remove the override (or drop the group: ~{group})")
    for group in sorted(g for g in used if g not in RUN_GROUPS and cfg.get(g) is None):
        raise ConfigError(f"{model_name} uses the config group {group}, which is not set: choose one, e.g. {group}=<an option in conf/{group}/>")


def _class_notes(target: str) -> Dict[str, str]:
    try:
        return dict(getattr(get_class(target), "unused_group_notes", {}) or {})
    except Exception:
        return {}


def build_model(cfg: DictConfig, tokenizer: Any, datamodule: Optional[Any] = None, strict: bool = True) -> L.LightningModule:
    """Instantiate ``cfg.model`` with its parts, the partial optimizer and scheduler and the
    tokenizer. ``strict``: check the composition first (:func:`check_groups_used`); a stored run
    config (resolved, checked when its run started) is built with ``strict=False``."""
    fill_data_dependent(cfg, datamodule, tokenizer)
    target = cfg.model.get("_target_")
    if not target:
        raise ConfigError("model._target_ is missing")
    try:
        get_class(target)
    except Exception as err:
        raise ConfigError(f"model._target_={target!r} cannot be imported: {err}") from err
    if strict:
        check_groups_used(cfg)
    inactive = inactive_objectives(cfg)
    if inactive:  # not built: their groups may be null
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            for name in inactive:
                del cfg.model.objectives[name]
    optimizer = build(cfg, "optimizer")
    scheduler = build(cfg, "scheduler") if cfg.get("scheduler") else None
    return build(cfg, "model", optimizer=optimizer, scheduler=scheduler, tokenizer=tokenizer)
