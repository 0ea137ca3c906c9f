"""Image-text matching (ITM): a binary matched / not matched classification of fused pairs.

Two recipes of negatives, one per model family's paper:

- :class:`ITMObjective` (ViLT): a share of the batch's pairs get another image (or caption) of the
  batch; one fused pass over ``B`` pairs.
- :class:`BatchNegativesITMObjective` (ALBEF): every pair, plus for each image one negative caption
  and for each caption one negative image drawn from the whole batch of every rank; one fused pass
  over up to ``3B`` pairs.

Negatives are drawn uniformly (``negatives=random``) or from ``softmax(cosine / tau)`` of the
contrastive objective's embeddings and temperature (``hard``), never a positive
(:func:`~mmresearch.modules.objectives.itm_negatives.sample_negative_partners`).
"""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmresearch.modules.objectives.itm_negatives import sample_negative_partners
from mmresearch.modules.objectives.base import Objective, StepOutputs
from mmresearch.utils.distributed import all_gather_ids, all_gather_no_grad, all_gather_tokens
from mmresearch.utils.errors import ConfigError, check_choice


def itm_terms(logits: Tensor, labels: Tensor) -> Dict[str, Tensor]:
    """``{loss: cross-entropy, acc: accuracy}`` of ``[P, 2]`` matching logits against ``[P]`` labels (1 = matched)."""
    return {"loss": F.cross_entropy(logits.float(), labels), "acc": (logits.argmax(1) == labels).float().mean()}


class _ITMBase(Objective):
    def __init__(self, weight: float, negatives: str) -> None:
        super().__init__(weight)
        check_choice("model.objectives.itm.negatives", negatives, ("random", "hard"))
        self.negatives = negatives

    def attach(self, model: nn.Module, name: str) -> None:
        super().attach(model, name)
        if self.negatives == "hard" and not any(hasattr(o, "temperature") for o in getattr(model, "objectives", {}).values()):
            raise ConfigError(f"model.objectives.{name}.negatives=hard samples from the contrastive scores: train a contrastive "
                              "objective too (model.objectives.itc.weight > 0), or set negatives=random")


class ITMObjective(_ITMBase):
    """ViLT's ITM: with probability ``negative_ratio`` a pair's image (``replace=image``) or caption
    (``replace=text``) is swapped for another row of the batch; labels are 1 for kept pairs.

    Needs ``model.itm_logits(images [B, 3, H, W], input_ids [B, L], attention_mask [B, L]) -> [B, 2]``.
    Terms: ``<name>`` (cross-entropy), ``<name>_acc``.
    """

    requires = ("itm_logits",)

    def __init__(self, weight: float, negatives: str, replace: str, negative_ratio: float) -> None:
        super().__init__(weight, negatives)
        check_choice("model.objectives.itm.replace", replace, ("image", "text"))
        self.replace, self.negative_ratio = replace, float(negative_ratio)

    def forward(self, model: nn.Module, batch: Any, outputs: StepOutputs) -> Dict[str, Tensor]:
        similarity = None
        if self.negatives == "hard":  # [texts, images] cosine / tau, detached (as ALBEF)
            similarity = outputs.logit_scale * (outputs.embeddings["text"] @ outputs.embeddings["image"].T).detach()
            if self.replace == "text":
                similarity = similarity.T  # a caption partner per image (replace=image: an image partner per caption)
        b = batch.num_images
        partner = sample_negative_partners(batch.image_ids, similarity)
        replace = (torch.rand(b, device=batch.images.device) < self.negative_ratio) & (partner >= 0)
        rows = torch.where(replace, partner, torch.arange(b, device=batch.images.device))
        images, ids, mask = batch.images, batch.input_ids, batch.attention_mask
        if self.replace == "image":
            images = images[rows]
        else:
            ids, mask = ids[rows], mask[rows]
        logits = model.itm_logits(images, ids, mask)
        labels = (~replace).long()
        return self.named(itm_terms(logits, labels))


class BatchNegativesITMObjective(_ITMBase):
    """ALBEF's ITM: the ``B`` pairs of the batch, one negative caption per image and one negative
    image per caption, the negatives drawn from the batch of every rank (their encoded tokens are
    gathered), fused in one pass.

    Reads ``outputs.encoded["image"|"text"]`` (token outputs of the unimodal encoders) and, for hard
    negatives, ``outputs.embeddings`` and ``outputs.logit_scale``. Needs
    ``model.prepare_image_tokens(tokens [B, N, D_img]) -> [B, N, D]`` and
    ``model.fused_itm_logits(text_tokens [P, L, D], text_mask [P, L], image_tokens [P, N, D]) -> [P, 2]``.
    Terms: ``<name>`` (cross-entropy), ``<name>_acc``.
    """

    requires = ("prepare_image_tokens", "fused_itm_logits")

    def __init__(self, weight: float, negatives: str) -> None:
        super().__init__(weight, negatives)

    def forward(self, model: nn.Module, batch: Any, outputs: StepOutputs) -> Dict[str, Tensor]:
        image, text = outputs.encoded["image"], outputs.encoded["text"]
        device = image.tokens.device
        b = batch.num_images
        image_tokens = model.prepare_image_tokens(image.tokens)  # [B, N, D]
        with torch.no_grad():
            ids_all = all_gather_ids(batch.image_ids)
            sim_i2t = sim_t2i = None
            if self.negatives == "hard":
                scale = outputs.logit_scale
                image_feat, text_feat = outputs.embeddings["image"], outputs.embeddings["text"]
                text_all, image_all = all_gather_no_grad(text_feat.detach()), all_gather_no_grad(image_feat.detach())
                sim_i2t, sim_t2i = scale * image_feat.detach() @ text_all.T, scale * text_feat.detach() @ image_all.T  # [B, G]
            text_for_image = sample_negative_partners(batch.image_ids, sim_i2t, column_ids=ids_all)  # a negative caption per image
            image_for_text = sample_negative_partners(batch.image_ids, sim_t2i, column_ids=ids_all)  # a negative image per caption
        texts_all, masks_all = all_gather_tokens(text.tokens, text.mask)  # [G, L, D], [G, L]
        images_all = all_gather_tokens(image_tokens, torch.ones(image_tokens.shape[:2], dtype=torch.long, device=device))[0]
        width = texts_all.shape[1]
        local_texts = F.pad(text.tokens, (0, 0, 0, width - text.tokens.shape[1]))
        local_masks = F.pad(text.mask, (0, width - text.mask.shape[1]))
        has_t, has_i = text_for_image >= 0, image_for_text >= 0  # rows without any negative (one image in the batch) are left out
        logits = model.fused_itm_logits(
            torch.cat([local_texts, texts_all[text_for_image[has_t]], local_texts[has_i]]),
            torch.cat([local_masks, masks_all[text_for_image[has_t]], local_masks[has_i]]),
            torch.cat([image_tokens, image_tokens[has_t], images_all[image_for_text[has_i]]]),
        )
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=device)
        labels[:b] = 1
        return self.named(itm_terms(logits, labels))
