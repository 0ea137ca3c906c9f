"""Masked language modelling given the image (ViLT, ALBEF), optionally distilled from a momentum model."""

from __future__ import annotations

from typing import Any, Dict

from torch import Tensor, nn

from mmresearch.modules.losses.momentum_distillation import mlm_distillation_loss
from mmresearch.modules.masking import MLMMasker
from mmresearch.modules.objectives.base import Objective, StepOutputs
from mmresearch.utils.errors import ConfigError


class MLMObjective(Objective):
    """Masks the captions (``probability`` of the tokens; of those ``mask_replace_prob`` become
    [MASK], ``random_replace_prob`` a random token, the rest stay; ``whole_word``: all pieces of a
    word together), encodes them with the image and predicts the masked tokens.

    ``distill=true`` (ALBEF): the targets mix in the momentum model's predictions with the step's
    distillation weight ``outputs.alpha``: ``(1 - alpha) * CE + alpha * soft CE``.

    Needs ``model.tokenizer`` (mask token, vocabulary), ``model.mlm_head`` (``[M, D] -> [M, V]``)
    and ``model.mlm_text_states(batch, masked_input_ids [B, L], outputs) -> [B, L, D]`` (the
    caption's states after seeing the image); with ``distill``,
    ``model.mlm_momentum_logits(batch, masked_input_ids, chosen [B, L] bool, outputs) -> [M, V] | None``.
    Terms: ``<name>`` (loss on the masked tokens only), ``<name>_acc``.
    """

    requires = ("tokenizer", "mlm_head", "mlm_text_states")

    def __init__(
        self,
        weight: float,
        probability: float,
        whole_word: bool,
        mask_replace_prob: float,
        random_replace_prob: float,
        distill: bool,
    ) -> None:
        super().__init__(weight)
        self.options = dict(probability=probability, mask_replace_prob=mask_replace_prob, random_replace_prob=random_replace_prob, whole_word=bool(whole_word))
        self.distill = bool(distill)
        self.masker = None

    def attach(self, model: nn.Module, name: str) -> None:
        super().attach(model, name)
        if self.distill and getattr(model, "mlm_momentum_logits", None) is None:
            raise ConfigError(f"model.objectives.{name}.distill=true needs a momentum model: {type(model).__name__} has none (set distill=false)")
        self.masker = MLMMasker(model.tokenizer, **self.options)

    def forward(self, model: nn.Module, batch: Any, outputs: StepOutputs) -> Dict[str, Tensor]:
        masked = self.masker(batch.input_ids, batch.attention_mask)
        chosen = masked.labels != -100
        target = masked.labels[chosen]
        states = model.mlm_text_states(batch, masked.input_ids, outputs)  # [B, L, D]
        if target.numel() == 0:  # nothing masked on this rank: a zero loss that still reaches the head (DDP)
            zero = model.mlm_head(states[:, 0]).sum() * 0.0
            return self.named({"loss": zero, "acc": zero.detach()})
        logits = model.mlm_head(states[chosen])  # only the masked positions: [M, V]
        momentum_logits = None
        if self.distill and outputs.alpha > 0:
            momentum_logits = model.mlm_momentum_logits(batch, masked.input_ids, chosen, outputs)
        loss = mlm_distillation_loss(logits, target, momentum_logits, outputs.alpha)
        return self.named({"loss": loss, "acc": (logits.argmax(1) == target).float().mean()})
