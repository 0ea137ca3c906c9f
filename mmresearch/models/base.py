"""What every model family shares: optimizer wiring, the finite-loss guard, retrieval evaluation
and the compositionality probe."""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Dict, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.compositionality import CompositionalityMetric, caption_wins
from mmresearch.evaluation.metric import RetrievalMetric
from mmresearch.modules.encoders.compile import compile_encoders
from mmresearch.optim.fused import keep_implementation_on_load, resolve_fused
from mmresearch.optim.param_groups import split_weight_decay
from mmresearch.utils.checkpoint import CONFIG_KEY


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class VisionLanguageModule(L.LightningModule):
    """Base LightningModule: subclasses define ``forward(batch) -> loss terms``, ``embed_images``
    and ``embed_texts``.

    Args:
        optimizer: a partial optimizer (Hydra ``_partial_: true``) called with parameter groups;
            its ``weight_decay`` applies to weight matrices only (see ``split_weight_decay``).
        scheduler: a partial ``(optimizer, total_steps) -> LRScheduler`` stepped every optimizer
            step, or None.
        eval_chunk_size: queries scored at once by the retrieval evaluator.
    """

    def __init__(self, optimizer: Callable, scheduler: Optional[Callable] = None, eval_chunk_size: Optional[int] = 1024) -> None:
        super().__init__()
        #: the resolved run config (plain containers), stored in every checkpoint so that a
        #: checkpoint alone rebuilds its model (``mmresearch.utils.checkpoint.load_model``)
        self.run_config: Optional[dict] = None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_retrieval = RetrievalMetric(chunk_size=eval_chunk_size)
        self.test_retrieval = RetrievalMetric(chunk_size=eval_chunk_size)
        self.val_compositionality = CompositionalityMetric(kind_names=())
        self.test_compositionality = CompositionalityMetric(kind_names=())

    def setup(self, stage: str) -> None:
        """Names of the hard-negative kinds (compositionality probe) come from the data module."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = tuple(getattr(datamodule, "neg_kind_names", ()) or ())
        self.val_compositionality.kind_names = self.test_compositionality.kind_names = names

    # ---- to implement -------------------------------------------------------------------
    #: whether embed_images / embed_texts give a shared embedding space (retrieval by cosine,
    #: zero-shot, probes, plots); a fused model without contrastive heads sets it False
    has_embeddings = True

    def embed_images(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W] -> [B, E]`` L2-normalised image embeddings."""
        raise NotImplementedError

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[T, L], [T, L] -> [T, E]`` L2-normalised caption embeddings."""
        raise NotImplementedError

    # ---- shared training helpers -------------------------------------------------------
    def check_finite(self, terms: Dict[str, Tensor]) -> None:
        """Stop the run with a clear message when the loss is NaN or infinite."""
        loss = terms["loss"]
        if not bool(torch.isfinite(loss.detach())):
            shown = ", ".join(f"{k}={float(v.detach()):.6g}" for k, v in terms.items())
            raise NonFiniteLossError(
                f"non-finite loss at global step {self.global_step} (epoch {self.current_epoch}): {shown}. "
                "Lower optimizer.lr, check the data, or enable gradient clipping (trainer.gradient_clip_val)."
            )

    def log_terms(self, terms: Dict[str, Tensor], prefix: str, batch_size: int) -> None:
        for name, value in terms.items():
            self.log(f"{prefix}/{name}", value.detach(), prog_bar=name == "loss", batch_size=batch_size)

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> Tensor:
        """``forward(batch)`` gives the loss terms (``loss`` is optimised); a non-finite loss
        stops the run; every term and the contrastive temperature (when there is one) are logged."""
        terms = self(batch)
        self.check_finite(terms)
        self.log_terms(terms, "train", batch.num_images)
        temperature = getattr(self, "temperature", None)
        if temperature is not None:
            self.log("train/tau", 1.0 / temperature().detach(), batch_size=batch.num_images)
        return terms["loss"]

    def on_train_batch_start(self, batch: ImageTextBatch, batch_idx: int) -> None:
        if getattr(self, "temperature", None) is not None:
            self.temperature.step(self.global_step)  # scheduled temperatures

    def on_train_batch_end(self, outputs, batch: ImageTextBatch, batch_idx: int) -> None:
        if getattr(self, "temperature", None) is not None:
            self.temperature.clamp_()  # learnable temperatures stay in their range

    # ---- evaluation ------------------------------------------------------------------------
    def update_retrieval(self, batch: ImageTextBatch, retrieval: RetrievalMetric) -> tuple[Tensor, Tensor]:
        """Embed a batch's images and captions and add them to ``retrieval``; returns the
        embeddings ``([B, E], [T, E])``."""
        image_emb = self.embed_images(batch.images)
        text_emb = self.embed_texts(batch.input_ids, batch.attention_mask)
        text_ids = batch.text_ids if batch.text_ids is not None else torch.arange(batch.num_texts, device=self.device)
        retrieval.update(image_emb, batch.image_ids, text_emb, batch.text_image_ids, text_ids)
        return image_emb, text_emb

    def _eval_step(self, batch: ImageTextBatch, retrieval: RetrievalMetric, compositionality: CompositionalityMetric) -> None:
        image_emb, text_emb = self.update_retrieval(batch, retrieval)
        if batch.neg_input_ids is not None and batch.neg_kinds is not None:
            negative_emb = self.embed_texts(batch.neg_input_ids, batch.neg_attention_mask)
            wins = caption_wins(image_emb, batch.image_ids, text_emb, batch.text_image_ids, negative_emb)
            compositionality.update(batch.image_ids, wins, batch.neg_kinds)

    def validation_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_retrieval, self.val_compositionality)

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_retrieval, self.test_compositionality)

    def _log_eval(self, prefix: str, *metrics) -> Dict[str, float]:
        values: Dict[str, float] = {}
        for metric in metrics:
            if metric.update_count == 0:  # e.g. no hard negatives in this data
                continue
            values.update(metric.compute())
            metric.reset()
        # The values are computed from states gathered from every rank: identical everywhere.
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, sync_dist=False)
        return values

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_retrieval, self.val_compositionality)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_retrieval, self.test_compositionality)

    def configure_model(self) -> None:
        """``torch.compile`` the encoders whose config asks for it (``image_encoder.compile``,
        ``text_encoder.compile``), in place, once the model is on its device (Lightning calls this
        before fit, validate and test)."""
        names = compile_encoders(self)
        if names:
            rank_zero_info(f"torch.compile: {', '.join(names)}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint[CONFIG_KEY] = self.run_config

    # ---- optimisation ------------------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of the trainable parameters: the partial ``optimizer`` called with
        weight-decay groups (``split_weight_decay``); ``fused: auto`` resolved for the parameters'
        device, and kept when a checkpoint of another setting is loaded (``mmresearch.optim.fused``)."""
        weight_decay = 0.0
        if isinstance(self.optimizer_factory, partial):
            weight_decay = float(self.optimizer_factory.keywords.get("weight_decay", 0.0))
        groups = split_weight_decay(self, weight_decay)
        trainer = self._trainer
        fp16_clipping = trainer is not None and str(trainer.precision).startswith("16") and bool(trainer.gradient_clip_val)
        factory = resolve_fused(self.optimizer_factory, [p for g in groups for p in g["params"]], fp16_clipping)
        return keep_implementation_on_load(factory(groups))

    def configure_optimizers(self):
        optimizer = self.make_optimizer()
        if self.scheduler_factory is None:
            return optimizer
        total = total_training_steps(self.trainer)
        total = int(total) if math.isfinite(total) else 10_000
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}


def total_training_steps(trainer) -> float:
    """Optimizer steps of the whole run, as ``trainer.estimated_stepping_batches`` computes them,
    but from a separate ``datamodule.train_dataloader()`` when there is a data module.

    ``estimated_stepping_batches`` builds and starts the fit loop's training iterator; called from
    ``configure_optimizers`` that happens before a checkpoint's loop state is restored, so a
    resumed run would never receive the training loader's saved position (its mid-epoch resume
    would restart the epoch's data from the beginning).
    """
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or trainer.max_epochs in (None, -1):
        return trainer.estimated_stepping_batches
    batches = len(datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif limit is not None:
        batches = int(batches * float(limit))
    steps = math.ceil(batches / trainer.accumulate_grad_batches) * max(trainer.max_epochs, 1)
    return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps
