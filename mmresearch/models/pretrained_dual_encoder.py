"""A dual encoder that starts from a transformers dual-tower checkpoint (``model=clip``): CLIP,
SigLIP and other ``AutoModel`` checkpoints with ``vision_model`` and ``text_model``."""

from __future__ import annotations

from typing import Any

import torch

from mmresearch.models.dual_encoder import DualEncoder
from mmresearch.modules.encoders.paired import checkpoint_scale_and_bias, release_paired_model
from mmresearch.utils.errors import ConfigError


class PretrainedDualEncoder(DualEncoder):
    """:class:`DualEncoder` whose towers are the halves of the checkpoint ``pretrained``
    (:class:`~mmresearch.modules.encoders.paired.PairedTowerEncoder`, config
    ``conf/model/clip.yaml``), and whose contrastive pair starts from the checkpoint's logit scale
    (copied into a learnable or fixed temperature) and, for SigLIP, its logit bias (copied into
    the SigLIP loss's ``logit_bias``). With these, our image-text logits equal the checkpoint's
    ``logits_per_image`` before any training.

    Args:
        pretrained: the checkpoint (hub name or local directory; ``model.pretrained``).
        scale_from_checkpoint: start the temperature (and SigLIP bias) from the checkpoint
            (true), or from the ``temperature`` / ``loss`` configs (false).
        pair: the objective that receives them (``image_text``).
        kwargs: ``towers``, ``objectives``, ``optimizer``... of :class:`DualEncoder`.
    """

    def __init__(self, pretrained: str, scale_from_checkpoint: bool = True, pair: str = "image_text", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pretrained = str(pretrained)
        self.pair = pair
        self._check_tokenizer_fits()
        if scale_from_checkpoint:
            self._start_from_checkpoint_scale(pair)
        release_paired_model()

    def _check_tokenizer_fits(self) -> None:
        """The data's tokenizer must not give ids beyond the text tower's embedding table."""
        text = self.towers["text"].encoder if "text" in self.towers else None
        rows = getattr(getattr(getattr(text, "model", None), "config", None), "vocab_size", None)
        if self.tokenizer is not None and rows is not None and len(self.tokenizer) > int(rows):
            source = getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
            raise ConfigError(f"the tokenizer ({source}) has {len(self.tokenizer)} tokens but the text tower of model.pretrained="
                              f"{self.pretrained} has {rows} embedding rows: use its own tokenizer (tokenizer=from_model)")

    @torch.no_grad()
    def _start_from_checkpoint_scale(self, pair: str) -> None:
        if pair not in self.objectives:
            raise ConfigError(f"model.pair={pair!r}: no such objective (objectives: {list(self.objectives)})")
        objective = self.objectives[pair]
        scale, bias = checkpoint_scale_and_bias(self.pretrained)
        temperature = getattr(objective, "temperature", None)
        if scale is not None and temperature is not None:
            log_scale, fixed = getattr(temperature, "log_logit_scale", None), getattr(temperature, "logit_scale", None)
            if isinstance(log_scale, torch.Tensor):  # learnable: log-parameterised
                log_scale.copy_(scale.to(log_scale.dtype))
            elif isinstance(fixed, torch.Tensor):  # fixed: the scale itself
                fixed.copy_(scale.exp().to(fixed.dtype))
            else:
                raise ConfigError(f"temperature={type(temperature).__name__} cannot start from the checkpoint's logit scale: use "
                                  "temperature=learnable or fixed (or model.scale_from_checkpoint=false)")
        loss_bias = getattr(getattr(objective, "loss", None), "logit_bias", None)
        if bias is not None and isinstance(loss_bias, torch.Tensor):
            loss_bias.copy_(bias.to(loss_bias.dtype))
        elif bias is not None:
            raise ConfigError(f"model.pretrained={self.pretrained!r} is a SigLIP-style checkpoint (it has a logit bias): train it with loss=siglip")

    @torch.no_grad()
    def to_transformers(self):
        """The model in its reference format: a fresh transformers model of the checkpoint's
        config (``AutoModel.from_config``) holding this model's weights (towers, projections,
        logit scale and SigLIP bias), loaded strictly: no missing or unexpected key."""
        from transformers import AutoConfig, AutoModel

        from mmresearch.modules.encoders.paired import PARTS
        from mmresearch.modules.lora import merged_state_dict

        reference = AutoModel.from_config(AutoConfig.from_pretrained(self.pretrained))
        state = {}
        for modality, (encoder_attr, projection_attr) in PARTS.items():
            encoder = self.towers[modality].encoder
            state.update({f"{encoder_attr}.{k}": v for k, v in merged_state_dict(encoder.model).items()})  # LoRA merged in
            if isinstance(encoder.projection, torch.nn.Linear):
                state.update({f"{projection_attr}.{k}": v for k, v in encoder.projection.state_dict().items()})
        objective = self.objectives[self.pair] if self.pair in self.objectives else None
        temperature = getattr(objective, "temperature", None)
        if hasattr(reference, "logit_scale") and temperature is not None:
            state["logit_scale"] = torch.log(temperature().detach()).reshape(reference.logit_scale.shape)
        bias = getattr(getattr(objective, "loss", None), "logit_bias", None)
        if hasattr(reference, "logit_bias") and isinstance(bias, torch.Tensor):
            state["logit_bias"] = bias.detach().reshape(reference.logit_bias.shape)
        missing, unexpected = reference.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in dict(reference.named_buffers())]  # buffers rebuilt by the config (position ids)
        if missing or unexpected:
            raise ConfigError(f"the model does not fill {type(reference).__name__}: missing {missing[:8]}, unexpected {unexpected[:8]}")
        return reference.eval()
