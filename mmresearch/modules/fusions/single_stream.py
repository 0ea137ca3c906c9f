"""ViLT-style single-stream transformer (Kim et al., 2021): word and patch tokens in one stack.

The sequence is ``[text tokens (from [CLS]) ; image [CLS] ; image patches]``. Text tokens are the
word + position (+ token type) embeddings of a Hugging Face BERT-style model; image tokens are a
timm ViT's patch embedding with its class token and position embeddings, interpolated to the
patch grid of the input size. A learned modality-type embedding is added to every token, the
ViT's transformer blocks process the joint sequence (so ViT weights can initialise them, as ViLT
does), and the pooled output is ``tanh(Linear(h[CLS_text]))``.
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.modules.encoders.text import HFTextEncoder
from mmresearch.modules.fusions.outputs import FusionOutput
from mmresearch.utils.errors import ConfigError


class SingleStreamEncoder(nn.Module):
    """Joint transformer over word and patch tokens.

    Args:
        image_encoder: a :class:`TimmImageEncoder` around a timm ViT: its patch embedding, class
            token, position embedding, blocks and final norm are used (its head is not).
        text_encoder: a :class:`HFTextEncoder` around a BERT-style model: only its embedding
            layer is kept (its transformer layers are dropped).
        max_image_tokens: in training, at most this many patches per image are kept, sampled at
            random (ViLT: 200); ``None`` keeps all. Evaluation always keeps all.
        pooling: what the pooler reads: ``"cls"`` (the text [CLS] state, ViLT) or ``"mean"`` (the
            masked mean of all joint states: learns faster from scratch).

    Shapes: ``forward(images [B, 3, H, W], input_ids [B, L], attention_mask [B, L]) ->
    FusionOutput``; ``H`` and ``W`` may differ from the ViT's size (positions are interpolated)
    but must be multiples of the patch size.
    """

    def __init__(
        self, image_encoder: TimmImageEncoder, text_encoder: HFTextEncoder, max_image_tokens: Optional[int] = 200, pooling: str = "cls"
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"model.pooling must be 'cls' (ViLT) or 'mean', got {pooling!r}")
        self.pooling = pooling
        vit = image_encoder.model
        needed = ("patch_embed", "blocks", "pos_embed", "cls_token", "norm")
        if not all(hasattr(vit, n) for n in needed) or vit.cls_token is None:
            raise ConfigError(
                f"model=vilt needs a timm ViT with a class token as image_encoder (e.g. image_encoder=vit_tiny); "
                f"{getattr(image_encoder, 'name', type(vit).__name__)!r} has no {[n for n in needed if not hasattr(vit, n)] or ['cls_token']}"
            )
        if max_image_tokens is not None and max_image_tokens < 1:
            raise ConfigError(f"model.encoder.max_image_tokens must be >= 1 or null, got {max_image_tokens}")
        self.patch_embed = vit.patch_embed
        self.patch_embed.strict_img_size = False  # any size that is a multiple of the patch size
        self.patch_embed.flatten = False  # [B, gh, gw, D] (timm NHWC output) to read the grid
        if hasattr(self.patch_embed, "output_fmt"):
            from timm.layers import Format

            self.patch_embed.output_fmt = Format.NHWC
        self.cls_token = vit.cls_token
        self.pos_embed = vit.pos_embed
        self.num_prefix_tokens = int(getattr(vit, "num_prefix_tokens", 1))
        if self.num_prefix_tokens != 1:
            raise ConfigError(f"model=vilt supports ViTs with exactly one prefix (class) token, got {self.num_prefix_tokens}")
        self.blocks = vit.blocks
        self.norm = vit.norm
        self.grid = tuple(self.patch_embed.grid_size)
        self.patch_size = tuple(self.patch_embed.patch_size)
        self.hidden_size = int(vit.embed_dim)

        hf = text_encoder.model
        self.word_embeddings = hf.get_input_embeddings()
        self.text_embeddings = hf.embeddings  # word + position (+ type) + LayerNorm
        text_dim = int(hf.config.hidden_size)
        self.text_proj = nn.Identity() if text_dim == self.hidden_size else nn.Linear(text_dim, self.hidden_size)
        self.max_text_positions = int(getattr(hf.config, "max_position_embeddings", 512))
        self.vocab_size = int(self.word_embeddings.num_embeddings)

        self.modality_type = nn.Embedding(2, self.hidden_size)
        nn.init.normal_(self.modality_type.weight, std=0.02)
        self.pooler = nn.Sequential(nn.Linear(self.hidden_size, self.hidden_size), nn.Tanh())
        self.max_image_tokens = max_image_tokens

    # -- embeddings ---------------------------------------------------------------------------
    def embed_text(self, input_ids: Tensor) -> Tensor:
        """``[B, L] -> [B, L, D]`` word + position embeddings plus the text modality type."""
        if input_ids.shape[1] > self.max_text_positions:
            raise ValueError(f"texts of {input_ids.shape[1]} tokens exceed the text model's {self.max_text_positions} positions (data.max_text_length)")
        x = self.text_proj(self.text_embeddings(input_ids=input_ids))
        return x + self.modality_type.weight[0]

    def embed_image(self, images: Tensor, sample: bool = False) -> Tensor:
        """``[B, 3, H, W] -> [B, 1 + P, D]``: class token + patches with (interpolated) positions
        plus the image modality type; with ``sample`` at most ``max_image_tokens`` random patches."""
        h, w = images.shape[-2:]
        if h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        patches = self.patch_embed(images)  # [B, gh, gw, D]
        b, gh, gw, d = patches.shape
        pos = self.pos_embed
        if (gh, gw) != self.grid:
            pos = resample_abs_pos_embed(pos, new_size=(gh, gw), old_size=self.grid, num_prefix_tokens=self.num_prefix_tokens)
        cls = self.cls_token.expand(b, -1, -1) + pos[:, :1]
        patches = patches.reshape(b, gh * gw, d) + pos[:, 1:]
        if sample and self.max_image_tokens is not None and gh * gw > self.max_image_tokens:
            keep = torch.rand(b, gh * gw, device=images.device).argsort(dim=1)[:, : self.max_image_tokens]
            patches = patches.gather(1, keep.sort(dim=1).values.unsqueeze(-1).expand(-1, -1, d))
        return torch.cat([cls, patches], dim=1) + self.modality_type.weight[1]

    # -- transformer --------------------------------------------------------------------------
    def transform(self, x: Tensor, mask: Tensor) -> Tensor:
        """The shared blocks and final norm over any token sequence: ``[B, N, D], [B, N] -> [B, N, D]``."""
        attn = mask.bool()[:, None, None, :]  # [B, 1, 1, N]: True = may attend
        for block in self.blocks:
            x = block(x, attn_mask=attn)
        return self.norm(x)

    @staticmethod
    def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
        weights = mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def encode_text_only(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Text alone through the shared blocks: ``[B, L] -> [B, D]``, the mean of its token states
        (cheap unimodal pass for contrastive first-stage scores; a fresh ViT's [CLS] state hardly
        depends on the input, the mean does)."""
        return self._masked_mean(self.transform(self.embed_text(input_ids), attention_mask), attention_mask)

    def encode_image_only(self, images: Tensor) -> Tensor:
        """Image alone through the shared blocks: ``[B, 3, H, W] -> [B, D]``, the mean of its token states."""
        x = self.embed_image(images, sample=self.training)
        return self.transform(x, x.new_ones(x.shape[:2], dtype=torch.long)).mean(1)

    # -- joint encoder --------------------------------------------------------------------------
    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor, image_embeds: Optional[Tensor] = None) -> FusionOutput:
        """Encode image-text pairs jointly. ``image_embeds [B, 1 + P, D]`` (from :meth:`embed_image`)
        may be given instead of re-embedding ``images`` (reused across pairs in retrieval)."""
        text = self.embed_text(input_ids)
        image = image_embeds if image_embeds is not None else self.embed_image(images, sample=self.training)
        x = torch.cat([text, image.to(text.dtype)], dim=1)
        mask = torch.cat([attention_mask.long(), attention_mask.new_ones(image.shape[:2]).long()], dim=1)
        x = self.transform(x, mask)
        n = input_ids.shape[1]
        summary = x[:, 0] if self.pooling == "cls" else self._masked_mean(x, mask)
        return FusionOutput(pooled=self.pooler(summary), text_tokens=x[:, :n], image_tokens=x[:, n:], mask=mask)
