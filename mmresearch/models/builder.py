"""Build a model family's LightningModule from the composed config: one factory for all."""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig, open_dict

from mmresearch.utils.instantiate import build


def build_text_encoder(cfg: DictConfig, tokenizer: Any):
    """The text encoder, with ``vocab_size`` filled from the tokenizer where the config has the key."""
    node = cfg.text_encoder
    if "vocab_size" in node and node.vocab_size is None:
        with open_dict(node):
            return build(cfg, "text_encoder", vocab_size=len(tokenizer))
    return build(cfg, "text_encoder")


def build_model(cfg: DictConfig, tokenizer: Any) -> L.LightningModule:
    """Instantiate ``cfg.model`` with its built encoders, loss, temperature and partial optimizer."""
    parts = dict(
        image_encoder=build(cfg, "image_encoder"),
        text_encoder=build_text_encoder(cfg, tokenizer),
        loss=build(cfg, "loss"),
        temperature=build(cfg, "temperature"),
        optimizer=build(cfg, "optimizer"),
        scheduler=build(cfg, "scheduler") if cfg.get("scheduler") else None,
    )
    return build(cfg, "model", **parts)
