"""Text encoders from Hugging Face transformers: pretrained by name/path, or built from a config."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

from mmresearch.modules.encoders.outputs import EncoderOutput
from mmresearch.utils.errors import ConfigError, check_choice

POOLINGS = ("cls", "mean")
OUTPUTS = ("pooled", "tokens", "both")


def _build_model(name_or_path: Optional[str], config: Optional[Mapping[str, Any]], vocab_size: Optional[int]) -> PreTrainedModel:
    if (name_or_path is None) == (config is None):
        raise ConfigError(
            "text_encoder: set exactly one of text_encoder.name_or_path (a hub name or local directory "
            "of a pretrained model) and text_encoder.config (a dict with model_type and sizes, for a "
            f"randomly initialised model); got name_or_path={name_or_path!r}, config={config!r}"
        )
    if name_or_path is not None:
        try:
            return AutoModel.from_pretrained(name_or_path, add_pooling_layer=False)
        except TypeError:
            return AutoModel.from_pretrained(name_or_path)
        except OSError as err:
            raise ConfigError(
                f"text_encoder.name_or_path={name_or_path!r} could not be loaded (offline without a "
                f"local copy, or a wrong path): {err}"
            ) from err
    cfg = dict(config)
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        raise ConfigError("text_encoder.config.model_type is required (for example 'bert')")
    if vocab_size is not None:
        cfg["vocab_size"] = int(vocab_size)
    try:
        hf_config = AutoConfig.for_model(model_type, **cfg)
    except ValueError as err:
        raise ConfigError(f"text_encoder.config.model_type={model_type!r}: {err}") from err
    try:
        return AutoModel.from_config(hf_config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(hf_config)


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder (BERT-style) returning pooled and/or token features.

    Args:
        name_or_path: hub name or local directory for ``AutoModel.from_pretrained``.
        config: for a randomly initialised model: ``model_type`` plus config fields
            (``hidden_size``, ``num_hidden_layers``...). ``vocab_size`` comes from the tokenizer.
        vocab_size: the tokenizer's vocabulary size (injected by the training script). For a
            pretrained model it must not exceed the model's embedding table.
        pooling: ``"cls"`` (first token's hidden state) or ``"mean"`` (masked mean over tokens).
        output: ``"pooled"``, ``"tokens"`` or ``"both"``.
        freeze: no gradients for the model.
        grad_checkpointing: transformers' gradient checkpointing.

    Shapes: ``forward(input_ids [B, L], attention_mask [B, L]) -> EncoderOutput(pooled
    [B, hidden], tokens [B, L, hidden] or None, mask [B, L])``.
    """

    def __init__(
        self,
        name_or_path: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        vocab_size: Optional[int] = None,
        pooling: str = "cls",
        output: str = "pooled",
        freeze: bool = False,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_choice("text_encoder.pooling", pooling, POOLINGS)
        check_choice("text_encoder.output", output, OUTPUTS)
        self.model = _build_model(name_or_path, config, vocab_size)
        rows = self.model.get_input_embeddings().num_embeddings
        if vocab_size is not None and vocab_size > rows:
            raise ConfigError(
                f"the tokenizer has {vocab_size} tokens but text_encoder ({name_or_path or 'from config'}) "
                f"has only {rows} embedding rows: pair text_encoder with its own tokenizer"
            )
        if grad_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.frozen = freeze
        if freeze:
            for p in self.model.parameters():
                p.requires_grad_(False)
        self.pooling = pooling
        self.output = output
        self.output_dim = int(self.model.config.hidden_size)
        self.token_dim = self.output_dim

    def train(self, mode: bool = True) -> "HFTextEncoder":
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> EncoderOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.output == "tokens":
            pooled = hidden.new_zeros(0)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        tokens = hidden if self.output != "pooled" else None
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=attention_mask)
