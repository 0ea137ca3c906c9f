"""The towers of a transformers dual-tower checkpoint (``CLIPModel``, ``SiglipModel``, SigLIP 2...):
each modality's encoder with the checkpoint's own pooling and projection, as one tower encoder.

``PairedTowerEncoder(pretrained, modality="image")`` is the checkpoint's ``vision_model`` and, where
it has one, its ``visual_projection``; ``modality="text"`` its ``text_model`` and ``text_projection``.
The pooled output is what the checkpoint's ``get_image_features`` / ``get_text_features`` returns
(CLIP pools the end-of-text token, SigLIP the last token through its head); the model's head only
L2-normalises it (:class:`~mmresearch.modules.heads.L2Normalize`). Both towers of one checkpoint
share one load (:func:`load_paired_model`, cached until the model is built).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel

from mmresearch.modules.encoders.outputs import EncoderOutput
from mmresearch.utils.errors import ConfigError

#: modality -> (the checkpoint's encoder attribute, its projection attribute)
PARTS = {"image": ("vision_model", "visual_projection"), "text": ("text_model", "text_projection")}


@lru_cache(maxsize=1)
def load_paired_model(pretrained: str) -> PreTrainedModel:
    """``AutoModel.from_pretrained(pretrained)`` (a hub name or a local directory), checked to be a
    dual-tower model; cached so that both towers take their half of one load."""
    try:
        model = AutoModel.from_pretrained(pretrained)
    except (OSError, ValueError, RuntimeError) as err:
        raise ConfigError(f"model.pretrained={pretrained!r} could not be loaded (offline without a local copy, or a wrong path): {err}") from err
    missing = [attr for attr, _ in PARTS.values() if not isinstance(getattr(model, attr, None), nn.Module)]
    if missing or not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
        raise ConfigError(f"model.pretrained={pretrained!r} is a {type(model).__name__}, not a dual-tower (CLIP-like) model with "
                          "vision_model, text_model, get_image_features and get_text_features")
    return model


def checkpoint_scale_and_bias(pretrained: str) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The checkpoint's ``logit_scale`` (log of ``1 / tau``) and ``logit_bias`` (SigLIP), detached copies, or None."""
    model = load_paired_model(pretrained)
    found = [getattr(model, name, None) for name in ("logit_scale", "logit_bias")]
    return tuple(t.detach().clone().reshape(()) if isinstance(t, Tensor) else None for t in found)  # type: ignore[return-value]


class PairedTowerEncoder(nn.Module):
    """One modality of a dual-tower checkpoint.

    Args:
        pretrained: hub name or local directory of the checkpoint (``model.pretrained``).
        modality: ``image`` (``forward(pixel_values [B, 3, H, W])``) or ``text``
            (``forward(input_ids [B, L], attention_mask [B, L])``).
        freeze: no gradient to this tower (a locked tower, LiT).

    ``forward`` returns ``EncoderOutput(pooled [B, E], tokens [B, N, D], mask)``: ``pooled`` is the
    checkpoint's projected feature (``get_*_features``), ``tokens`` its last hidden states.
    """

    def __init__(self, pretrained: str, modality: str, freeze: bool = False) -> None:
        super().__init__()
        if modality not in PARTS:
            raise ConfigError(f"a paired tower's modality must be one of {sorted(PARTS)}, got {modality!r}")
        model = load_paired_model(str(pretrained))
        encoder_attr, projection_attr = PARTS[modality]
        self.pretrained, self.modality = str(pretrained), modality
        self.model = getattr(model, encoder_attr)
        projection = getattr(model, projection_attr, None)
        self.projection = projection if isinstance(projection, nn.Module) else nn.Identity()
        if isinstance(projection, nn.Linear):
            self.output_dim = int(projection.out_features)
        else:  # SigLIP: the pooled state of the encoder's own head
            self.output_dim = int(self.model.config.hidden_size)
        self.token_dim = int(self.model.config.hidden_size)
        self.train()  # from_pretrained returns eval mode: Lightning would train with dropout off
        if freeze:
            self.requires_grad_(False)

    def forward(self, *inputs: Tensor) -> EncoderOutput:
        if self.modality == "image":
            (pixel_values,) = inputs
            out = self.model(pixel_values=pixel_values, return_dict=True)
            mask = None
        else:
            input_ids, attention_mask = inputs
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
            mask = attention_mask
        return EncoderOutput(pooled=self.projection(out.pooler_output), tokens=out.last_hidden_state, mask=mask)


def release_paired_model() -> None:
    """Drop the cached checkpoint once the towers hold their halves."""
    load_paired_model.cache_clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
