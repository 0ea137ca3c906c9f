"""CLIP-style dual encoder: two towers, two projection heads, a contrastive loss."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Union

import torch
from torch import Tensor, nn

from lightning.pytorch.utilities import rank_zero_warn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.models.base import VisionLanguageModule
from mmresearch.modules.temperature import Temperature
from mmresearch.utils.errors import ConfigError

HeadSpec = Union[nn.Module, Callable[..., nn.Module]]


def _build_head(head: HeadSpec, in_dim: int, key: str, encoder_key: str) -> nn.Module:
    """Build a partial head with the encoder's width, or check a built one against it."""
    if isinstance(head, nn.Module):
        got = getattr(head, "in_dim", None)
        if got is not None and got != in_dim:
            raise ConfigError(f"{key}.in_dim={got} but {encoder_key} outputs width {in_dim}: remove {key}.in_dim or make them equal")
        return head
    return head(in_dim=in_dim)


class DualEncoder(VisionLanguageModule):
    """Image tower + text tower + projection heads, trained with a contrastive loss.

    Args:
        image_encoder: a module with ``output_dim`` returning ``EncoderOutput`` for ``[B, 3, H, W]``.
        text_encoder: a module with ``output_dim`` returning ``EncoderOutput`` for ``(input_ids, mask)``.
        image_head: a built head or a partial taking ``in_dim`` (filled from the image encoder).
        text_head: the same for text.
        loss: a contrastive loss module (``mmresearch.modules.losses``) returning a dict with ``loss``.
        temperature: a :class:`Temperature` giving the logit scale.
        optimizer, scheduler, eval_chunk_size: see :class:`VisionLanguageModule`.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        image_head: HeadSpec,
        text_head: HeadSpec,
        loss: nn.Module,
        temperature: Temperature,
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        eval_chunk_size: Optional[int] = 1024,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, eval_chunk_size=eval_chunk_size)
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_head = _build_head(image_head, image_encoder.output_dim, "model.image_head", "image_encoder")
        self.text_head = _build_head(text_head, text_encoder.output_dim, "model.text_head", "text_encoder")
        img_out, txt_out = getattr(self.image_head, "out_dim", None), getattr(self.text_head, "out_dim", None)
        if img_out is not None and txt_out is not None and img_out != txt_out:
            raise ConfigError(f"model.image_head.out_dim={img_out} and model.text_head.out_dim={txt_out} must be equal (the shared space)")
        self.loss = loss
        self._warned_negatives = False
        self.temperature = temperature

    def embed_images(self, images: Tensor) -> Tensor:
        return self.image_head(self.image_encoder(images).pooled)

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.text_head(self.text_encoder(input_ids, attention_mask).pooled)

    def forward(self, batch: ImageTextBatch) -> Dict[str, Tensor]:
        """Loss terms of a paired batch. When the batch carries hard-negative captions
        (``data.train_negatives=true``) they are embedded with the text tower and passed to the
        loss as extra negatives (NegCLIP; every built-in loss takes them, each in its own way: see
        :mod:`mmresearch.modules.losses`). A loss without ``supports_hard_negatives`` (e.g. a
        user's own) gets the batch without them, with a warning once."""
        image_emb = self.embed_images(batch.images)
        texts, mask = batch.input_ids, batch.attention_mask
        n = texts.shape[0]
        takes_negatives = bool(getattr(self.loss, "supports_hard_negatives", False))
        use_negatives = batch.neg_input_ids is not None and takes_negatives
        if batch.neg_input_ids is not None and not takes_negatives and not self._warned_negatives:
            self._warned_negatives = True
            rank_zero_warn(
                f"the batches carry hard-negative captions but loss {type(self.loss).__name__} does not use "
                "them; they are ignored (set data.train_negatives=false to skip tokenising them)"
            )
        if use_negatives:  # one text-tower pass for captions and negatives
            texts = torch.cat([texts, batch.neg_input_ids])
            mask = torch.cat([mask, batch.neg_attention_mask])
        text_emb = self.embed_texts(texts, mask)
        negatives = text_emb[n:] if use_negatives else None
        kwargs = {} if negatives is None else {"hard_negative_text_features": negatives, "hard_negative_image_ids": batch.neg_image_ids}
        return self.loss(image_emb, text_emb[:n], self.temperature(), batch.image_ids, batch.text_image_ids, **kwargs)
