"""Checkpoints written before the objectives and towers (mmresearch before issue 17) load as today's
models: their stored run config and state-dict names are rewritten to today's, with the same
values (the behaviour check showed both formats train and evaluate identically).

Before, a fused model's ``model.objectives`` held numbers (``{itm: 1.0, ...}``) and the options sat
in ``model.itm`` / ``model.mlm``; the dual encoder had ``model.image_head`` / ``model.text_head``
and took the ``loss`` and ``temperature`` groups directly; the temperature (and ViLT's ``itc``
loss) were modules of the model itself.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Mapping, MutableMapping

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

OBJECTIVES = "mmresearch.modules.objectives."
#: the options of the old format, as its YAML and Python defaults had them
_OLD_ITM = {"vilt": {"negatives": "random", "replace": "image", "negative_ratio": 0.5}, "albef": {"negatives": "hard"}}
_OLD_MLM = {"vilt": {"probability": 0.15, "whole_word": True, "mask_replace_prob": 0.8, "random_replace_prob": 0.1},
            "albef": {"probability": 0.15, "whole_word": False, "mask_replace_prob": 0.8, "random_replace_prob": 0.1}}
_OLD_RETRIEVAL = {"enabled": True, "first_stage": "self", "top_k": 16, "batch_size": 256, "max_full_pairs": 250_000}
_OLD_DISTILL = {"alpha": 0.4, "warmup_steps": None}
#: old state-dict prefix -> today's, per family
_RENAMED = {
    "dual_encoder": {"image_encoder.": "towers.image.encoder.", "image_head.": "towers.image.head.", "text_encoder.": "towers.text.encoder.",
                     "text_head.": "towers.text.head.", "loss.": "objectives.image_text.loss.", "temperature.": "objectives.image_text.temperature."},
    "vilt": {"loss.": "objectives.itc.loss.", "temperature.": "objectives.itc.temperature."},
    "albef": {"temperature.": "objectives.itc.temperature."},
}


def family(target: str) -> str:
    return {"DualEncoder": "dual_encoder", "ViLT": "vilt", "ALBEF": "albef"}.get(str(target).rsplit(".", 1)[-1], "")


def is_old_format(model: Mapping[str, Any]) -> bool:
    """Whether a stored ``model`` config node predates the objectives and towers."""
    kind = family(model.get("_target_", ""))
    if kind == "dual_encoder":
        return "towers" not in model
    if kind in ("vilt", "albef"):
        objectives = model.get("objectives") or {}
        return any(not isinstance(v, Mapping) and v is not None for v in objectives.values())
    return False


def upgrade_run_config(cfg: DictConfig) -> DictConfig:
    """A stored (resolved) run config in today's format; unchanged when it already is."""
    if not is_old_format(cfg.model):
        return cfg
    old = OmegaConf.to_container(cfg.model, resolve=True)
    kind = family(old["_target_"])
    groups = {g: OmegaConf.to_container(cfg[g], resolve=True) if isinstance(cfg.get(g), DictConfig) else None
              for g in ("image_encoder", "text_encoder", "loss", "temperature")}
    if kind == "dual_encoder":
        model = {"_target_": old["_target_"],
                 "towers": {"image": {"encoder": groups["image_encoder"], "head": old["image_head"]},
                            "text": {"encoder": groups["text_encoder"], "head": old["text_head"]}},
                 "objectives": {"image_text": {"_target_": OBJECTIVES + "ContrastiveObjective", "weight": 1.0, "modalities": ["image", "text"],
                                               "loss": groups["loss"], "temperature": groups["temperature"]}},
                 "eval_chunk_size": old.get("eval_chunk_size", 1024)}
    else:
        weights = {k: float(v) for k, v in (old.get("objectives") or {}).items()}
        itm = {**_OLD_ITM[kind], **(old.get("itm") or {})}
        mlm = {**_OLD_MLM[kind], **(old.get("mlm") or {})}
        objectives: Dict[str, Any] = {}
        for name, weight in weights.items():
            if name == "itc":
                node = {"_target_": OBJECTIVES + ("ContrastiveObjective" if kind == "vilt" else "MomentumContrastiveObjective"), "temperature": groups["temperature"]}
                if kind == "vilt":
                    node.update(modalities=["image", "text"], loss=groups["loss"])
            elif name == "itm":
                node = {"_target_": OBJECTIVES + ("ITMObjective" if kind == "vilt" else "BatchNegativesITMObjective"), **itm}
            elif name == "mlm":
                node = {"_target_": OBJECTIVES + "MLMObjective", **mlm, "distill": kind == "albef"}
            else:
                node = {"_target_": OBJECTIVES + "VQAObjective"}
            objectives[name] = {**node, "weight": weight} if weight > 0 else None
        model = {k: v for k, v in old.items() if k not in ("objectives", "itm", "mlm", "eval_chunk_size")}
        model.update(image_encoder=groups["image_encoder"], text_encoder=groups["text_encoder"], objectives=objectives,
                     retrieval={**_OLD_RETRIEVAL, **(old.get("retrieval") or {})})
        if kind == "albef":
            model["distill"] = {**_OLD_DISTILL, **(old.get("distill") or {})}
    upgraded = cfg.copy()
    with open_dict(upgraded):
        upgraded.model = model
        if kind != "dual_encoder" and not weights.get("itc"):
            upgraded.loss = upgraded.temperature = None  # not used by the model
        elif kind == "albef":
            upgraded.loss = None
    log.info("the checkpoint's run config predates model.objectives (%s): read in today's format", old["_target_"])
    return upgraded


def upgrade_state_dict(state: MutableMapping[str, Any], target: str, keys: Iterable[str]) -> MutableMapping[str, Any]:
    """``state`` with the old names of family ``target`` renamed to today's, where today's model
    (its state-dict ``keys``) has them; a renamed tensor today's model does not have (a temperature
    that no objective trains) is dropped. Unchanged when it is already in today's format."""
    renamed = _RENAMED.get(family(target), {})
    keys = set(keys)
    if not renamed or any(k.startswith(("towers.", "objectives.")) for k in state):
        return state
    out = type(state)() if not isinstance(state, dict) else {}
    for key, value in state.items():
        new = next((to + key[len(old):] for old, to in renamed.items() if key.startswith(old)), key)
        if new != key and new not in keys:
            continue
        out[new] = value
    return out
