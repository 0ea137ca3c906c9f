"""Training objectives: one interface (:class:`Objective`), one weighted sum (:func:`weighted_sum`).

Each objective takes a model's :class:`StepOutputs` and the batch and returns named loss terms;
which objectives a run trains, their weights and options come from ``model.objectives.<name>``.

- :class:`ContrastiveObjective`: two towers' embeddings with any loss of the ``loss`` group.
- :class:`MomentumContrastiveObjective`: ALBEF's ITC (momentum features, queue, distillation).
- :class:`ITMObjective` (ViLT) and :class:`BatchNegativesITMObjective` (ALBEF): image-text matching.
- :class:`MLMObjective`: masked language modelling given the image, optionally distilled.
- :class:`VQAObjective`: answer classification with soft targets.
"""

from mmresearch.modules.objectives.base import Objective, StepOutputs, weighted_sum
from mmresearch.modules.objectives.contrastive import ContrastiveObjective
from mmresearch.modules.objectives.itm import BatchNegativesITMObjective, ITMObjective
from mmresearch.modules.objectives.mlm import MLMObjective
from mmresearch.modules.objectives.momentum_contrastive import MomentumContrastiveObjective
from mmresearch.modules.objectives.vqa import VQAObjective, vqa_loss

__all__ = [
    "Objective",
    "StepOutputs",
    "weighted_sum",
    "ContrastiveObjective",
    "MomentumContrastiveObjective",
    "ITMObjective",
    "BatchNegativesITMObjective",
    "MLMObjective",
    "VQAObjective",
    "vqa_loss",
]
