"""ALBEF-style fusion: text tokens attend to each other and, by cross-attention, to image tokens.

Each layer is torch's ``nn.TransformerDecoderLayer`` without a causal mask: ``x = LN(x +
SelfAttn(x))``, ``x = LN(x + CrossAttn(x, image))``, ``x = LN(x + FFN(x))`` (post-norm, GELU), the
structure of ALBEF's BERT layers from ``fusion_layer`` on. The self-attention and feed-forward
weights of such a layer can be initialised from a Hugging Face BERT layer
(:func:`load_bert_layer`), as ALBEF initialises its fusion layers from BERT-base's layers 7-12;
the cross-attention starts fresh.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn

from mmresearch.modules.fusions.outputs import FusionOutput
from mmresearch.utils.errors import ConfigError

ACTIVATIONS = ("gelu", "relu")


class CrossAttentionFusion(nn.Module):
    """Fusion encoder over text tokens with cross-attention to image tokens.

    Args:
        hidden_size: ``D``, the text tokens' width.
        num_layers: fusion layers (ALBEF: 6).
        num_heads: attention heads (``D`` must be divisible by it).
        intermediate_size: feed-forward width (BERT: ``4 D``).
        image_dim: ``D_i``, the image tokens' width; a linear map to ``D`` is added when it differs.
        num_image_tokens: ``N``, needed with ``image_positions``.
        image_positions: add a learned position embedding ``[N, D]`` to the image tokens (for
            tokens of a CNN feature map, which carry no position; a ViT's already do).
        dropout: dropout inside the layers.
        layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
        activation: ``gelu`` (BERT) or ``relu``.

    Shapes: ``forward(text_tokens [B, L, D], text_mask [B, L], image_tokens [B, N, D_i]) ->
    FusionOutput(pooled [B, D] = the fused [CLS] state, text_tokens [B, L, D], image_tokens
    [B, N, D], mask [B, L])``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        intermediate_size: int,
        image_dim: int,
        num_image_tokens: Optional[int] = None,
        image_positions: bool = False,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-12,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"model.fusion_layers must be >= 1, got {num_layers}")
        if hidden_size % num_heads:
            raise ConfigError(f"the fusion width {hidden_size} is not divisible by model.fusion.num_heads={num_heads}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"fusion activation must be one of {ACTIVATIONS} (the text model's hidden_act), got {activation!r}")
        self.hidden_size, self.image_dim = int(hidden_size), int(image_dim)
        self.image_in = nn.Identity() if image_dim == hidden_size else nn.Linear(image_dim, hidden_size)
        self.image_pos: Optional[nn.Parameter] = None
        if image_positions:
            if not num_image_tokens:
                raise ConfigError("image positions need the number of image tokens (the image encoder's num_tokens)")
            self.image_pos = nn.Parameter(torch.randn(1, int(num_image_tokens), hidden_size) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                hidden_size, num_heads, intermediate_size, dropout=dropout, activation=activation,
                layer_norm_eps=layer_norm_eps, batch_first=True, norm_first=False,
            )
            for _ in range(num_layers)
        )

    def prepare_image(self, image_tokens: Tensor) -> Tensor:
        """``[B, N, D_i] -> [B, N, D]``: width map and position embedding (computed once per image
        when the same image meets many captions, as in retrieval)."""
        x = self.image_in(image_tokens)
        if self.image_pos is not None:
            if x.shape[1] != self.image_pos.shape[1]:
                raise ValueError(f"{x.shape[1]} image tokens but the fusion's position embedding has {self.image_pos.shape[1]} (train and evaluate at one resolution)")
            x = x + self.image_pos
        return x

    def forward(self, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor, prepared: bool = False) -> FusionOutput:
        """Fuse; ``prepared=True`` when ``image_tokens`` already went through :meth:`prepare_image`."""
        image = image_tokens if prepared else self.prepare_image(image_tokens)
        image = image.to(text_tokens.dtype)
        padding = ~text_mask.bool()  # True = ignore
        x = text_tokens
        for layer in self.layers:
            x = layer(x, image, tgt_key_padding_mask=padding)
        return FusionOutput(pooled=x[:, 0], text_tokens=x, image_tokens=image, mask=text_mask)


def bert_layers(text_model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a Hugging Face BERT-style model (``model.encoder.layer``)."""
    layers = getattr(getattr(text_model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"text_encoder ({type(text_model).__name__}) has no BERT-style layer list (model.encoder.layer): "
            "the ALBEF model splits a BERT/RoBERTa-style encoder into text and fusion layers"
        )
    return layers


def split_bert_layers(text_model: nn.Module, keep: int) -> List[nn.Module]:
    """Keep the first ``keep`` layers in ``text_model`` and return the removed ones (in order)."""
    layers = bert_layers(text_model)
    if keep < 0 or keep > len(layers):
        raise ConfigError(f"model.text_layers={keep} but the text encoder has {len(layers)} layers")
    removed = list(layers[keep:])
    text_model.encoder.layer = nn.ModuleList(list(layers[:keep]))
    if hasattr(text_model, "config"):
        text_model.config.num_hidden_layers = keep
    return removed


@torch.no_grad()
def load_bert_layer(layer: nn.TransformerDecoderLayer, bert_layer: nn.Module) -> None:
    """Copy a Hugging Face BERT layer's self-attention, its LayerNorm and feed-forward into a
    fusion layer (``q, k, v`` -> ``self_attn.in_proj``, ``attention.output`` -> ``out_proj`` and
    ``norm1``, ``intermediate``/``output`` -> ``linear1``/``linear2`` and ``norm3``). The
    cross-attention and ``norm2`` are left as they are."""
    try:
        attn, out = bert_layer.attention.self, bert_layer.attention.output
        pairs = [
            (layer.self_attn.out_proj.weight, out.dense.weight), (layer.self_attn.out_proj.bias, out.dense.bias),
            (layer.norm1.weight, out.LayerNorm.weight), (layer.norm1.bias, out.LayerNorm.bias),
            (layer.linear1.weight, bert_layer.intermediate.dense.weight), (layer.linear1.bias, bert_layer.intermediate.dense.bias),
            (layer.linear2.weight, bert_layer.output.dense.weight), (layer.linear2.bias, bert_layer.output.dense.bias),
            (layer.norm3.weight, bert_layer.output.LayerNorm.weight), (layer.norm3.bias, bert_layer.output.LayerNorm.bias),
        ]
        qkv_w = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])
        qkv_b = torch.cat([attn.query.bias, attn.key.bias, attn.value.bias])
    except AttributeError as err:
        raise ConfigError(f"cannot initialise a fusion layer from {type(bert_layer).__name__}: not a BERT-style layer ({err})") from err
    pairs += [(layer.self_attn.in_proj_weight, qkv_w), (layer.self_attn.in_proj_bias, qkv_b)]
    for target, source in pairs:
        if target.shape != source.shape:
            raise ConfigError(f"fusion layer shape {tuple(target.shape)} does not match the text layer's {tuple(source.shape)}")
        target.copy_(source)
