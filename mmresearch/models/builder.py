"""Build a model family's LightningModule from the composed config: one factory for all."""

from __future__ import annotations

import inspect
from typing import Any, Optional

import lightning as L
from hydra.utils import get_class
from omegaconf import DictConfig, open_dict

from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build


def build_text_encoder(cfg: DictConfig, tokenizer: Any):
    """The text encoder, with ``vocab_size`` filled from the tokenizer where the config has the key."""
    node = cfg.text_encoder
    if "vocab_size" in node and node.vocab_size is None:
        with open_dict(node):
            return build(cfg, "text_encoder", vocab_size=len(tokenizer))
    return build(cfg, "text_encoder")


def _model_parameters(cfg: DictConfig) -> set:
    target = cfg.model.get("_target_")
    if not target:
        raise ConfigError("model._target_ is missing")
    try:
        cls = get_class(target)
    except Exception as err:
        raise ConfigError(f"model._target_={target!r} cannot be imported: {err}") from err
    return set(inspect.signature(cls.__init__).parameters)


def fill_data_dependent(cfg: DictConfig, datamodule: Any) -> None:
    """Write sizes that come from the data into the config (``model.num_answers`` for VQA heads),
    so the stored run config rebuilds the same model."""
    if "num_answers" in cfg.model and cfg.model.num_answers is None and datamodule is not None and hasattr(datamodule, "num_answers"):
        with open_dict(cfg):
            cfg.model.num_answers = int(datamodule.num_answers)


def build_model(cfg: DictConfig, tokenizer: Any, datamodule: Optional[Any] = None) -> L.LightningModule:
    """Instantiate ``cfg.model`` with the parts its class takes: built encoders, loss, temperature,
    partial optimizer and scheduler, and the tokenizer. Groups a model does not take (e.g. a
    fused model without a contrastive objective) are not built."""
    fill_data_dependent(cfg, datamodule)
    accepted = _model_parameters(cfg)
    makers = dict(
        image_encoder=lambda: build(cfg, "image_encoder"),
        text_encoder=lambda: build_text_encoder(cfg, tokenizer),
        loss=lambda: build(cfg, "loss"),
        temperature=lambda: build(cfg, "temperature"),
        optimizer=lambda: build(cfg, "optimizer"),
        scheduler=lambda: build(cfg, "scheduler") if cfg.get("scheduler") else None,
        tokenizer=lambda: tokenizer,
    )
    parts = {name: make() for name, make in makers.items() if name in accepted and name not in cfg.model}
    return build(cfg, "model", **parts)
