"""Image-text contrastive losses.

Every loss is a pure function plus an ``nn.Module`` wrapping it; the module's forward is
``forward(image_features [N, D], text_features [N, D], logit_scale (scalar), image_ids [N] | None,
text_image_ids [N] | None, hard_negative_text_features [M, D] | None, hard_negative_image_ids [M] |
None) -> {"loss": ..., <terms>: ...}`` and handles the distributed gather
(see :class:`~mmresearch.modules.losses.base.ContrastiveLoss`).

A loss is chosen by its config, ``conf/loss/<name>.yaml`` (``loss=<name>``), whose ``_target_``
names the class: there is no registry beside Hydra's. Training uses a loss through
:class:`~mmresearch.modules.objectives.ContrastiveObjective`.
"""

from __future__ import annotations

from mmresearch.modules.losses.base import Columns, ContrastiveLoss, PairView, make_view
from mmresearch.modules.losses.infonce import InfoNCELoss, infonce_loss
from mmresearch.modules.losses.margin import MarginContrastiveLoss, margin_contrastive_loss
from mmresearch.modules.losses.ntxent import NTXentLoss, ntxent_loss
from mmresearch.modules.losses.siglip import SigLIPLoss, siglip_loss
from mmresearch.modules.losses.triplet import TripletLoss, triplet_loss

__all__ = [
    "Columns",
    "ContrastiveLoss",
    "PairView",
    "make_view",
    "InfoNCELoss",
    "SigLIPLoss",
    "TripletLoss",
    "NTXentLoss",
    "MarginContrastiveLoss",
    "infonce_loss",
    "siglip_loss",
    "triplet_loss",
    "ntxent_loss",
    "margin_contrastive_loss",
]
