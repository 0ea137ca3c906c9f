"""Contrastive alignment of two modalities' embeddings, with any loss of the ``loss`` group."""

from __future__ import annotations

from typing import Any, Dict, Sequence

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from mmresearch.modules.objectives.base import Objective, StepOutputs
from mmresearch.utils.errors import ConfigError


class ContrastiveObjective(Objective):
    """Aligns the embeddings of ``modalities[0]`` and ``modalities[1]`` (a pair of towers).

    Reads ``outputs.embeddings[m]`` (``[N_m, E]``, L2-normalised) and the batch's ids of each
    modality (rows with the same id are positives); when the second modality is ``text`` and the
    model embedded hard-negative captions (``outputs.negative_text_embeddings``), they are extra
    negatives for a loss with ``supports_hard_negatives``. Sets ``outputs.logit_scale`` (detached)
    for the objectives that run after it (hard ITM negatives).

    Args:
        loss: a contrastive loss module (config group ``loss``; :mod:`mmresearch.modules.losses`).
        temperature: its :class:`~mmresearch.modules.temperature.Temperature` (config group ``temperature``).
        weight: the weight in the training loss.
        modalities: the two modalities aligned, in the loss's (image, text) argument order.
    """

    def __init__(self, loss: nn.Module, temperature: nn.Module, weight: float, modalities: Sequence[str]) -> None:
        super().__init__(weight)
        if loss is None or temperature is None:
            raise ConfigError("a contrastive objective needs a loss and a temperature (config groups loss, temperature)")
        modalities = tuple(modalities)
        if len(modalities) != 2 or modalities[0] == modalities[1]:
            raise ConfigError(f"a contrastive objective aligns two different modalities, got modalities={list(modalities)}")
        self.loss, self.temperature, self.modalities = loss, temperature, modalities

    @property
    def takes_hard_negatives(self) -> bool:
        """Whether this objective uses the batch's hard-negative captions."""
        return self.modalities[1] == "text" and bool(getattr(self.loss, "supports_hard_negatives", False))

    def attach(self, model: nn.Module, name: str) -> None:
        super().attach(model, name)
        towers = getattr(model, "modalities", None)
        if towers is not None:
            missing = [m for m in self.modalities if m not in towers]
            if missing:
                raise ConfigError(f"model.objectives.{name}.modalities={list(self.modalities)}: the model has no tower {missing} (towers: {list(towers)})")

    def forward(self, model: nn.Module, batch: Any, outputs: StepOutputs) -> Dict[str, Tensor]:
        first, second = self.modalities
        kwargs = {}
        if self.takes_hard_negatives and outputs.negative_text_embeddings is not None:
            kwargs = {"hard_negative_text_features": outputs.negative_text_embeddings, "hard_negative_image_ids": batch.neg_image_ids}
        scale = self.temperature()
        terms = self.loss(outputs.embeddings[first], outputs.embeddings[second], scale, batch.ids(first), batch.ids(second), **kwargs)
        outputs.logit_scale = scale.detach()
        return self.named(terms)


def warn_unused_negatives(model: nn.Module, objectives: Any) -> None:
    """Once per model: the batches carry hard-negative captions that no objective uses."""
    if getattr(model, "_warned_negatives", False):
        return
    model._warned_negatives = True
    losses = [type(o.loss).__name__ for o in objectives if isinstance(o, ContrastiveObjective)]
    rank_zero_warn(
        f"the batches carry hard-negative captions but {'loss ' + ', '.join(losses) if losses else 'no objective'} does not use them; "
        "they are ignored (set data.train_negatives=false to skip tokenising them)"
    )
