"""Image encoders from timm, by name."""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import timm
import torch
from torch import Tensor, nn

from mmresearch.modules.encoders.compile import CompileSpec, compile_options
from mmresearch.modules.encoders.outputs import EncoderOutput
from mmresearch.modules.encoders.weights import KeyMap, LoadReport, load_weights
from mmresearch.utils.errors import ConfigError, check_choice, unknown_choice

OUTPUTS = ("pooled", "tokens", "both")


def _check_timm_name(name: str, key: str = "image_encoder.name") -> None:
    base = name.split(".")[0]
    if not timm.is_model(base):
        raise unknown_choice(key, name, timm.list_models())


class TimmImageEncoder(nn.Module):
    """A timm backbone returning pooled and/or token features.

    Args:
        name: a timm model name (``timm.list_models()``), optionally with a pretrained tag
            (``vit_base_patch16_224.augreg_in21k``).
        pretrained: load timm's pretrained weights (needs the internet or a local hub cache).
        checkpoint_path: a weight file (``.safetensors``, ``.pth``...) or checkpoint directory
            loaded into the backbone instead (not together with ``pretrained``). Its classifier
            keys (``pretrained_cfg["classifier"]``) are dropped: the backbone has no head.
        strict: every key must match (else ConfigError listing missing/unexpected/shape-mismatched
            keys); ``False`` loads what matches and warns.
        key_map: renames the checkpoint's keys first: regex -> replacement (``re.sub``, in order)
            or a hook ``(state_dict, model) -> state_dict`` (see ``encoders.key_maps``).
        img_size: input resolution, passed to models that take it (ViTs) and used for the dry run
            that measures the output width.
        pool: ``None`` keeps the model's own global pooling (average for CNNs, class token for
            ViTs); any timm ``global_pool`` string (``"avg"``, ``"max"``, ``"token"``, ...) sets it;
            ``"flatten"`` concatenates every spatial position (keeps where things are, which
            average pooling throws away; ``output_dim`` is then ``channels * h * w``).
        output: ``"pooled"``, ``"tokens"`` or ``"both"``.
        freeze: no gradients for the backbone (eval-mode BatchNorm/dropout too).
        grad_checkpointing: timm's activation checkpointing, where the model supports it.
        channels_last: keep the backbone in channels-last memory format (faster CNNs on CPU/GPU).
        compile: ``torch.compile`` this encoder: ``true``, or a mapping of ``torch.compile``
            arguments (``{mode: max-autotune}``); applied when training/evaluation starts
            (``mmresearch.modules.encoders.compile``), state-dict keys unchanged.
        stem_pool: keep the max-pool of a ResNet-style stem. ``False`` replaces it with identity:
            twice the resolution through the network, which keeps small objects legible in small
            images (e.g. 64 px); use narrower stages to keep the cost.
        model_kwargs: extra arguments for ``timm.create_model`` (widths, depths, drop path...).

    Shapes: ``forward(images [B, 3, H, W]) -> EncoderOutput(pooled [B, output_dim],
    tokens [B, N, token_dim] or None)``.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        img_size: Optional[int] = None,
        pool: Optional[str] = None,
        output: str = "pooled",
        freeze: bool = False,
        grad_checkpointing: bool = False,
        channels_last: bool = False,
        stem_pool: bool = True,
        model_kwargs: Optional[Mapping[str, Any]] = None,
        checkpoint_path: Optional[str] = None,
        strict: bool = True,
        key_map: KeyMap = None,
        compile: CompileSpec = False,
    ) -> None:
        super().__init__()
        _check_timm_name(name)
        self.compile_options = compile_options(compile, "image_encoder.compile")
        if pretrained and checkpoint_path is not None:
            raise ConfigError(
                f"image_encoder.pretrained=true and image_encoder.checkpoint_path={checkpoint_path!r} both load "
                "weights: set image_encoder.pretrained=false to load the file"
            )
        check_choice("image_encoder.output", output, OUTPUTS)
        kwargs = dict(model_kwargs or {})
        if img_size is not None and _takes_img_size(name):
            kwargs.setdefault("img_size", img_size)
        self.flatten = pool == "flatten"
        if pool is not None and not self.flatten:
            kwargs["global_pool"] = pool
        try:
            self.model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
        except TypeError as err:
            raise ConfigError(f"image_encoder.model_kwargs={kwargs} not accepted by timm model {name!r}: {err}") from err
        self.load_report: Optional[LoadReport] = None
        if checkpoint_path is not None:
            self.load_report = load_weights(self.model, checkpoint_path, strict, "image_encoder.checkpoint_path",
                                            key_map=key_map, ignore_unexpected=_classifier_keys(self.model))
        if not stem_pool:
            if not isinstance(getattr(self.model, "maxpool", None), nn.MaxPool2d):
                raise ConfigError(f"image_encoder.stem_pool=false needs a model with a max-pool stem (timm ResNets); {name!r} has none")
            self.model.maxpool = nn.Identity()
        self.name = name
        self.output = output
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.frozen = freeze
        if freeze:
            for p in self.model.parameters():
                p.requires_grad_(False)
        size = img_size or int(self.model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        self.img_size = size
        pooled, tokens = self._dry_run(size)
        self.output_dim = int(pooled.shape[-1])
        self.token_dim = int(tokens.shape[-1])
        self.num_tokens = int(tokens.shape[1])

    @torch.no_grad()
    def _dry_run(self, size: int) -> tuple[Tensor, Tensor]:
        was_training = self.model.training
        self.model.eval()
        x = torch.zeros(1, 3, size, size)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.model.forward_features(x)
        out = self._pool(feats), self._tokens(feats)
        self.model.train(was_training)
        return out

    def _pool(self, feats: Tensor) -> Tensor:
        if self.flatten:
            return feats.flatten(1)
        return self.model.forward_head(feats, pre_logits=True)

    @staticmethod
    def _tokens(feats: Tensor) -> Tensor:
        return feats.flatten(2).transpose(1, 2) if feats.ndim == 4 else feats

    def train(self, mode: bool = True) -> "TimmImageEncoder":
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, images: Tensor) -> EncoderOutput:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.model.forward_features(images)
        pooled = self._pool(feats) if self.output != "tokens" else feats.new_zeros(0)
        tokens = self._tokens(feats) if self.output != "pooled" else None
        return EncoderOutput(pooled=pooled, tokens=tokens)


def _classifier_keys(model: nn.Module) -> list[str]:
    """Regexes of the classifier's keys (``pretrained_cfg["classifier"]``: ``fc``, ``head.fc``...)."""
    names = model.pretrained_cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [re.escape(n) + r"\." for n in names]


def _takes_img_size(name: str) -> bool:
    """ViT-like timm models take ``img_size``; CNNs do not."""
    base = name.split(".")[0]
    return any(base.startswith(p) for p in ("vit", "deit", "beit", "eva", "test_vit", "vit_", "flexivit", "naflexvit"))
