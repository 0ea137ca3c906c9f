"""Text encoders from Hugging Face transformers: pretrained by name/path, or built from a config."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Mapping, Optional, Tuple

from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

from mmresearch.modules.encoders.compile import CompileSpec, compile_options
from mmresearch.modules.encoders.outputs import EncoderOutput
from mmresearch.modules.encoders.weights import KeyMap, LoadReport, enforce, load_weights, report_from_hf
from mmresearch.utils.errors import ConfigError, check_choice

POOLINGS = ("cls", "mean")
OUTPUTS = ("pooled", "tokens", "both")
#: task heads of a checkpoint saved from a full model (pretraining, classification): an encoder
#: does not use them, so they are dropped with an info line
HEAD_KEYS = (r"pooler\.", r"cls\.", r"lm_head\.", r"classifier\.", r"qa_outputs\.", r"score\.")


@contextlib.contextmanager
def _quiet_transformers_load_report() -> Iterator[None]:
    """transformers 5.x logs its own load report as a warning; ours replaces it."""
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _from_pretrained(name_or_path: str) -> Tuple[PreTrainedModel, Mapping[str, Any]]:
    """``AutoModel.from_pretrained`` without the pooler where the model takes that argument, plus
    its loading info; shape-mismatched weights are re-initialised (and reported), not loaded."""
    kwargs = dict(output_loading_info=True, ignore_mismatched_sizes=True)
    try:
        with _quiet_transformers_load_report():
            try:
                return AutoModel.from_pretrained(name_or_path, add_pooling_layer=False, **kwargs)
            except TypeError:
                return AutoModel.from_pretrained(name_or_path, **kwargs)
    except (OSError, RuntimeError) as err:
        raise ConfigError(
            f"text_encoder.name_or_path={name_or_path!r} could not be loaded (offline without a "
            f"local copy, or a wrong path): {err}"
        ) from err


def _build_model(
    name_or_path: Optional[str], config: Optional[Mapping[str, Any]], vocab_size: Optional[int], strict: bool = True
) -> Tuple[PreTrainedModel, Optional[LoadReport]]:
    if (name_or_path is None) == (config is None):
        raise ConfigError(
            "text_encoder: set exactly one of text_encoder.name_or_path (a hub name or local directory "
            "of a pretrained model) and text_encoder.config (a dict with model_type and sizes, for a "
            f"randomly initialised model); got name_or_path={name_or_path!r}, config={config!r}"
        )
    if name_or_path is not None:
        model, info = _from_pretrained(str(name_or_path))
        report = report_from_hf(info, model, str(name_or_path), ignore_unexpected=HEAD_KEYS)
        enforce(report, strict, "text_encoder.name_or_path", hint=(
            "Set text_encoder.strict=false to use it anyway (the missing or mismatched weights stay randomly "
            "initialised), or load a matching state dict with text_encoder.checkpoint_path (+ text_encoder.key_map)."))
        return model, report
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
        return AutoModel.from_config(hf_config, add_pooling_layer=False), None
    except TypeError:
        return AutoModel.from_config(hf_config), None


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
        compile: ``torch.compile`` this encoder: ``true``, or a mapping of ``torch.compile``
            arguments; applied when training/evaluation starts, state-dict keys unchanged.
        strict: every weight must load: missing or shape-mismatched keys from ``name_or_path``,
            or any mismatch with ``checkpoint_path``, raise ConfigError (task heads such as
            ``pooler.*``, ``cls.*``, ``lm_head.*`` are dropped without one). ``False`` warns.
        checkpoint_path: a state-dict file (``.safetensors``, ``.pth``, ``.bin``...) or directory
            loaded into the model (built from ``name_or_path`` or ``config``) afterwards.
        key_map: renames the checkpoint's keys first: regex -> replacement (``re.sub``, in order)
            or a hook ``(state_dict, model) -> state_dict``; e.g. ``{"^bert\\.": ""}``.

    ``load_report`` holds the last :class:`LoadReport` (``None`` for a model from ``config``).

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
        strict: bool = True,
        checkpoint_path: Optional[str] = None,
        key_map: KeyMap = None,
        compile: CompileSpec = False,
    ) -> None:
        super().__init__()
        self.compile_options = compile_options(compile, "text_encoder.compile")
        check_choice("text_encoder.pooling", pooling, POOLINGS)
        check_choice("text_encoder.output", output, OUTPUTS)
        self.model, self.load_report = _build_model(name_or_path, config, vocab_size, strict)
        if checkpoint_path is not None:
            self.load_report = load_weights(self.model, checkpoint_path, strict, "text_encoder.checkpoint_path",
                                            key_map=key_map, ignore_unexpected=HEAD_KEYS)
        rows = self.model.get_input_embeddings().num_embeddings
        if vocab_size is not None and vocab_size > rows:
            raise ConfigError(
                f"the tokenizer has {vocab_size} tokens but text_encoder ({name_or_path or 'from config'}) "
                f"has only {rows} embedding rows: pair text_encoder with its own tokenizer"
            )
        if grad_checkpointing:  # transformers 5 renamed it (the old name warns of its removal)
            enable = getattr(self.model, "activation_checkpointing_enable", None) or self.model.gradient_checkpointing_enable
            enable()
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
