"""What every model family shares (:class:`MultimodalModule`): objectives and their weighted sum,
the finite-loss guard, temperatures, optimizer wiring, compile, the run config in checkpoints."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Dict, Mapping, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.compositionality import CompositionalityMetric
from mmresearch.modules.encoders.compile import compile_encoders
from mmresearch.modules.objectives.base import Objective, StepOutputs, trained_objectives, weighted_sum
from mmresearch.optim.fused import keep_implementation_on_load, resolve_fused
from mmresearch.optim.param_groups import split_weight_decay
from mmresearch.utils.checkpoint import CONFIG_KEY
from mmresearch.utils.errors import ConfigError


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class MultimodalModule(L.LightningModule):
    """What every model family shares: its training objectives and their one weighted sum, the
    finite-loss guard, the temperatures' schedule and range, optimizer wiring, ``torch.compile``
    of the encoders and the run config in checkpoints. Evaluation belongs to the family's protocol
    (:class:`~mmresearch.models.embedding_retrieval.EmbeddingRetrievalModule` for models with a
    shared embedding space, :class:`~mmresearch.models.fused_base.FusedVisionLanguageModule` for
    models that score pairs jointly).

    A family implements :meth:`step_outputs` (what its objectives read) and calls
    :meth:`register_objectives` once its heads exist; ``forward(batch)`` then runs the objectives
    (those named in ``objective_order`` first, in that order; the others in config order) and adds
    ``loss``, the weighted sum of their losses in config order.

    Args:
        optimizer: a partial optimizer (Hydra ``_partial_: true``) called with parameter groups;
            its ``weight_decay`` applies to weight matrices only (see ``split_weight_decay``).
        scheduler: a partial ``(optimizer, total_steps) -> LRScheduler`` stepped every optimizer
            step, or None.
        tokenizer: the data's tokenizer (objectives such as MLM need it), or None.
    """

    #: objectives that run first, in this order (those whose outputs later ones read)
    objective_order: tuple = ()
    #: group -> why this family does not use it (the error of a config group set but not used)
    unused_group_notes: Dict[str, str] = {}

    def __init__(self, optimizer: Callable, scheduler: Optional[Callable] = None, tokenizer: Any = None) -> None:
        super().__init__()
        #: the resolved run config (plain containers), stored in every checkpoint so that a
        #: checkpoint alone rebuilds its model (``mmresearch.models.loading.load_model``)
        self.run_config: Optional[dict] = None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.tokenizer = tokenizer
        self.objectives = nn.ModuleDict()

    # ---- objectives ------------------------------------------------------------------------
    def register_objectives(self, objectives: Optional[Mapping[str, Objective]]) -> None:
        """Train ``objectives`` (name -> :class:`Objective`; weight 0 or None: not trained), in
        config order; each checks that this model has what it needs (:meth:`Objective.attach`)."""
        given = dict(objectives or {})
        active = trained_objectives(given)
        if not active:
            raise ConfigError(f"model.objectives: {type(self).__name__} needs at least one objective with a weight > 0 "
                              f"(got {', '.join(given) or 'none'}, all of weight 0 or null)")
        del self.objectives  # registered again below: after the model's networks, in the summary and state dict
        self.objectives = nn.ModuleDict()
        for name, objective in active.items():
            if not isinstance(objective, Objective):
                raise ConfigError(f"model.objectives.{name} must be an mmresearch.modules.objectives.Objective, got {type(objective).__name__}")
            self.objectives[name] = objective
        for name, objective in active.items():
            objective.attach(self, name)

    def step_outputs(self, batch: ImageTextBatch) -> StepOutputs:
        """What this model computes once per training batch for its objectives."""
        raise NotImplementedError

    def forward(self, batch: ImageTextBatch) -> Dict[str, Tensor]:
        """Every objective's terms on a training batch, and ``loss``: their weighted sum."""
        if not self.objectives:
            raise ConfigError(f"{type(self).__name__} trains no objective: give one of model.objectives a weight > 0")
        outputs = self.step_outputs(batch)
        first = [n for n in self.objective_order if n in self.objectives]
        terms: Dict[str, Tensor] = {}
        for name in first + [n for n in self.objectives if n not in first]:
            terms.update(self.objectives[name](self, batch, outputs))
        terms["loss"] = weighted_sum(terms, {name: obj.weight for name, obj in self.objectives.items()})
        return terms

    def temperatures(self) -> Dict[str, nn.Module]:
        """The temperature of every objective that has one: ``{objective name: Temperature}``."""
        return {name: obj.temperature for name, obj in self.objectives.items() if getattr(obj, "temperature", None) is not None}

    @property
    def temperature(self) -> Optional[nn.Module]:
        """The contrastive temperature when exactly one objective has one, else None."""
        found = list(self.temperatures().values())
        return found[0] if len(found) == 1 else None

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

    def setup(self, stage: str) -> None:
        """Names of the hard-negative kinds (compositionality probe) come from the data module."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = tuple(getattr(datamodule, "neg_kind_names", ()) or ())
        for module in self.modules():
            if isinstance(module, CompositionalityMetric):
                module.kind_names = names

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
        stops the run; every term and the contrastive temperatures are logged (``train/tau``, or
        ``train/<objective>/tau`` when several objectives have one)."""
        terms = self(batch)
        self.check_finite(terms)
        self.log_terms(terms, "train", batch.num_images)
        temperatures = self.temperatures()
        for name, temperature in temperatures.items():
            key = "train/tau" if len(temperatures) == 1 else f"train/{name}/tau"
            self.log(key, 1.0 / temperature().detach(), batch_size=batch.num_images)
        return terms["loss"]

    def on_train_batch_start(self, batch: ImageTextBatch, batch_idx: int) -> None:
        for temperature in self.temperatures().values():
            temperature.step(self.global_step)  # scheduled temperatures

    def on_train_batch_end(self, outputs, batch: ImageTextBatch, batch_idx: int) -> None:
        for temperature in self.temperatures().values():
            temperature.clamp_()  # learnable temperatures stay in their range

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
        weight-decay groups (``split_weight_decay``, split by :meth:`lr_scales`); ``fused: auto`` resolved for the parameters'
        device, and kept when a checkpoint of another setting is loaded (``mmresearch.optim.fused``)."""
        weight_decay, base_lr = 0.0, None
        if isinstance(self.optimizer_factory, partial):
            weight_decay = float(self.optimizer_factory.keywords.get("weight_decay", 0.0))
            base_lr = self.optimizer_factory.keywords.get("lr")
        groups = split_weight_decay(self, weight_decay, self.lr_scales(), base_lr)
        trainer = self._trainer
        fp16_clipping = trainer is not None and str(trainer.precision).startswith("16") and bool(trainer.gradient_clip_val)
        factory = resolve_fused(self.optimizer_factory, [p for g in groups for p in g["params"]], fp16_clipping)
        return keep_implementation_on_load(factory(groups))

    def lr_scales(self) -> Dict[nn.Parameter, float]:
        """Per-parameter learning-rate factors (layer-wise decay of a tower); none by default."""
        return {}

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
