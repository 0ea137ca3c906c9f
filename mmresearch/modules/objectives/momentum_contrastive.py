"""ALBEF's image-text contrastive objective (ITC): online features against the momentum features
of the whole batch (every rank) and a queue of earlier ones, with momentum-distilled soft targets."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor, nn

from mmresearch.modules.losses.momentum_distillation import QueueContrastiveLoss
from mmresearch.modules.objectives.base import Objective, StepOutputs
from mmresearch.utils.distributed import all_gather_ids, all_gather_no_grad
from mmresearch.utils.errors import ConfigError


class MomentumContrastiveObjective(Objective):
    """Soft targets ``alpha * softmax(momentum similarities) + (1 - alpha) * ground truth`` over
    the columns: the momentum features of the batch of every rank, then the model's queue
    (:class:`~mmresearch.modules.losses.momentum_distillation.QueueContrastiveLoss`); image ids
    make every caption of an image a positive. After the loss, in training, the gathered momentum
    features are enqueued. Sets ``outputs.logit_scale`` (hard ITM negatives).

    Reads ``outputs.embeddings["image"|"text"]`` (``[B, E]``) and ``outputs.alpha``; needs
    ``model.momentum_embeddings(batch, outputs) -> ([B, E], [B, E])`` and ``model.queue`` (a
    :class:`~mmresearch.modules.queues.FeatureQueue` or None). Terms: ``<name>``,
    ``<name>_loss_i2t``, ``<name>_loss_t2i``.

    Args:
        temperature: the ITC temperature (config group ``temperature``; ALBEF: learnable, 0.07).
        weight: the weight in the training loss.
    """

    requires = ("momentum_embeddings",)

    def __init__(self, temperature: nn.Module, weight: float) -> None:
        super().__init__(weight)
        if temperature is None:
            raise ConfigError("the momentum contrastive objective needs a temperature (config group temperature)")
        self.temperature = temperature
        self.loss = QueueContrastiveLoss()

    def forward(self, model: nn.Module, batch: Any, outputs: StepOutputs) -> Dict[str, Tensor]:
        image_feat, text_feat = outputs.embeddings["image"], outputs.embeddings["text"]
        queue = getattr(model, "queue", None)
        with torch.no_grad():
            image_feat_m, text_feat_m = model.momentum_embeddings(batch, outputs)
            ids_all = all_gather_ids(batch.image_ids)  # the whole batch of every rank (identity on one process)
            image_all, text_all = all_gather_no_grad(image_feat_m), all_gather_no_grad(text_feat_m)
            image_cols, text_cols, column_ids = image_all, text_all, ids_all
            if queue is not None:
                queued_images, queued_texts, queued_ids = queue.contents()
                image_cols = torch.cat([image_all, queued_images.to(image_all.dtype)])
                text_cols = torch.cat([text_all, queued_texts.to(text_all.dtype)])
                column_ids = torch.cat([ids_all, queued_ids])
        scale = self.temperature()
        terms = self.loss(image_feat, text_feat, image_feat_m, text_feat_m, batch.image_ids, image_cols, text_cols, column_ids, scale, outputs.alpha)
        if model.training and queue is not None:
            queue.enqueue(image_all, text_all, ids_all)
        outputs.logit_scale = scale.detach()
        return self.named(terms)
