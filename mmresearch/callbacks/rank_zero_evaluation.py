"""Base of the evaluations that run once after the test loop, on global rank zero.

They embed whole datasets with the trained model (zero-shot classification, linear probes) and
log ``test/<name>`` metrics, which land in ``results.json`` with the other test metrics. Under
DDP only rank zero computes (the model is the same on every rank); the others log nothing.
"""

from __future__ import annotations

from typing import Dict

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn


class RankZeroEvaluation(L.Callback):
    """Subclasses implement :meth:`evaluate` returning ``{name: value}``; ``prefix`` is prepended."""

    prefix = "test"

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, float]:
        raise NotImplementedError

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        if not hasattr(pl_module, "embed_images") or not getattr(pl_module, "has_embeddings", True):
            rank_zero_warn(f"{type(self).__name__}: {type(pl_module).__name__} has no image/text embeddings; skipped")
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            # the test loop runs in inference mode; probes fit with autograd on the features
            with torch.inference_mode(False), torch.no_grad():
                values = self.evaluate(trainer, pl_module)
        finally:
            pl_module.train(was_training)
        for name, value in values.items():
            pl_module.log(f"{self.prefix}/{name}", float(value), rank_zero_only=True)

    @staticmethod
    def autocast(trainer: L.Trainer):
        """The trainer's precision context (bf16/fp16 autocast or nothing) for forward passes."""
        return trainer.precision_plugin.forward_context
