"""Plug any ``nn.Module`` in as an encoder, with a declared output width."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from mmresearch.modules.encoders.outputs import EncoderOutput
from mmresearch.utils.errors import ConfigError


class CustomEncoder(nn.Module):
    """Wraps a module whose forward returns ``[B, output_dim]`` (or ``[B, N, output_dim]`` tokens).

    Use from a config::

        image_encoder:
          _target_: mmresearch.modules.encoders.custom.CustomEncoder
          output_dim: 512
          module: {_target_: my_package.MyCNN, width: 64}

    Args:
        module: the built module. Its forward takes the images ``[B, 3, H, W]`` (image side) or
            ``input_ids, attention_mask`` (text side).
        output_dim: the width of what it returns; checked against the real output at start-up.
        modality: ``"image"`` or ``"text"``: which arguments forward passes on.
    """

    def __init__(self, module: nn.Module, output_dim: Optional[int] = None, modality: str = "image") -> None:
        super().__init__()
        declared = output_dim if output_dim is not None else getattr(module, "output_dim", None)
        if declared is None:
            raise ConfigError(
                f"{modality}_encoder.output_dim is required for a custom encoder "
                f"({type(module).__name__} declares no output_dim attribute)"
            )
        if modality not in ("image", "text"):
            raise ConfigError(f"{modality}_encoder.modality must be 'image' or 'text', got {modality!r}")
        self.module = module
        self.output_dim = int(declared)
        self.token_dim = self.output_dim
        self.modality = modality

    def forward(self, *inputs: Tensor) -> EncoderOutput:
        out = self.module(*inputs) if self.modality == "image" else self.module(inputs[0], inputs[1])
        if out.shape[-1] != self.output_dim:  # caught at the first batch, before any update
            raise ConfigError(
                f"{self.modality}_encoder.output_dim={self.output_dim} but {type(self.module).__name__} "
                f"returns width {out.shape[-1]} (output shape {tuple(out.shape)})"
            )
        if out.ndim == 3:
            mask = inputs[1] if self.modality == "text" else None
            return EncoderOutput(pooled=out[:, 0], tokens=out, mask=mask)
        return EncoderOutput(pooled=out)
