"""The interface every training objective implements, the step outputs objectives share, and the
one weighted sum of their losses.

A model computes its :class:`StepOutputs` for a batch once (embeddings, encoder outputs, momentum
features: whatever it has); then each of its objectives turns them (and the batch) into named
terms; ``loss`` is the weighted sum of the objectives' main terms (:func:`weighted_sum`). The
objectives of a run and their weights and options come from the config
(``model.objectives.<name>: {_target_, weight, ...}``); an objective of weight 0 is not built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from torch import Tensor, nn

from mmresearch.utils.errors import ConfigError


@dataclass
class StepOutputs:
    """What a model computed for one training batch, shared by its objectives. A model fills the
    fields it has; an objective reads the ones it needs and may set one for the objectives that
    run after it (the contrastive objective sets ``logit_scale`` for hard ITM negatives).

    Attributes:
        embeddings: ``modality -> [N_m, E]`` L2-normalised embeddings of the contrastive space.
        negative_text_embeddings: ``[M, E]`` embeddings of the batch's hard-negative captions.
        encoded: ``modality -> EncoderOutput`` of the unimodal encoders (tokens for a fusion).
        momentum_encoded: the same from the momentum encoders (ALBEF).
        logit_scale: the detached ``1 / tau`` of the contrastive objective, once it ran.
        alpha: the weight of momentum distillation at this step (0: none).
    """

    embeddings: Dict[str, Tensor] = field(default_factory=dict)
    negative_text_embeddings: Optional[Tensor] = None
    encoded: Dict[str, Any] = field(default_factory=dict)
    momentum_encoded: Dict[str, Any] = field(default_factory=dict)
    logit_scale: Optional[Tensor] = None
    alpha: float = 0.0


class Objective(nn.Module):
    """A training objective: ``forward(model, batch, outputs) -> {name: loss, name_<k>: term}``.

    The returned dict holds the objective's loss under its own name (the config key,
    ``model.objectives.<name>``) and any other term it logs (accuracies, parts of the loss) as
    ``<name>_<term>``; only the loss enters the weighted sum. Subclasses list in ``requires`` the
    model attributes they call (checked by :meth:`attach`, so that a model that cannot train an
    objective says so at start), and may override :meth:`attach` to check options against the
    model or build what depends on it (the MLM masker from the model's tokenizer).

    Options have no defaults here: they are written once, in the model YAMLs.

    Args:
        weight: the objective's weight in the training loss (> 0: an objective of weight 0 is not built).
    """

    #: model attributes (methods, heads) this objective uses
    requires: tuple = ()

    def __init__(self, weight: float) -> None:
        super().__init__()
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"an objective's weight must be a number >= 0, got {weight!r}")
        self.weight = float(weight)
        self.name = type(self).__name__

    def attach(self, model: nn.Module, name: str) -> None:
        """Called once by the model that trains this objective under ``name``: checks that the
        model has what the objective needs."""
        self.name = name
        missing = [attr for attr in self.requires if getattr(model, attr, None) is None]
        if missing:
            raise ConfigError(
                f"model.objectives.{name} ({type(self).__name__}) cannot be trained by {type(model).__name__}: it needs "
                f"{', '.join(missing)}, which this model does not have"
            )

    def named(self, terms: Mapping[str, Tensor], main: str = "loss") -> Dict[str, Tensor]:
        """``terms`` under this objective's name: ``main`` becomes ``<name>``, the others ``<name>_<key>``."""
        return {self.name if key == main else f"{self.name}_{key}": value for key, value in terms.items()}

    def forward(self, model: nn.Module, batch: Any, outputs: StepOutputs) -> Dict[str, Tensor]:
        raise NotImplementedError


def trained_objectives(objectives: Optional[Mapping[str, Any]]) -> Dict[str, "Objective"]:
    """The objectives of ``objectives`` (name -> Objective or None) that are trained: not None and
    of weight > 0, in their order."""
    return {name: obj for name, obj in dict(objectives or {}).items() if obj is not None and getattr(obj, "weight", 1.0) > 0}


def weighted_sum(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """The training loss: ``sum_k weights[k] * terms[k]`` over the objectives, in the order of
    ``weights`` (the config's). Every objective must have returned its term."""
    missing = [name for name in weights if name not in terms]
    if missing:
        raise KeyError(f"objectives {missing} returned no term under their own name (got {sorted(terms)})")
    return sum(weight * terms[name] for name, weight in weights.items())
