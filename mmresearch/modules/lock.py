"""Fine-tuning a pretrained tower by depth: lock it except its last blocks, or decay its learning rate layer by layer.

Lock a tower for fine-tuning: no gradient to its encoder except its last blocks (open_clip's
``--lock-image-unlocked-groups`` / ``--lock-text-unlocked-layers``), optionally with its norm
layers and biases still trained (``--lock-image-freeze-bn-stats`` aside: running statistics are
not touched here).

The blocks are found, not named: the ``nn.ModuleList`` / ``nn.Sequential`` of two or more blocks
of one type that holds the most parameters (CLIP's ``encoder.layers``, timm ViT's ``blocks``, BERT's
``encoder.layer``). "The last N blocks" are those blocks and every parameter registered after them
(the final norm, the pooler, the checkpoint's projection).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from torch import nn

from mmresearch.utils.errors import ConfigError

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def find_blocks(module: nn.Module) -> Tuple[str, List[nn.Module]]:
    """``(name, blocks)`` of the largest repeated-block container in ``module``."""
    best: Tuple[str, List[nn.Module]] = ("", [])
    best_size = 0
    for name, child in module.named_modules():
        if not isinstance(child, (nn.ModuleList, nn.Sequential)):
            continue
        blocks = list(child.children())
        if len(blocks) < 2 or len({type(b) for b in blocks}) != 1:
            continue
        size = sum(p.numel() for p in child.parameters())
        if size > best_size:
            best, best_size = (name, blocks), size
    return best


def lock_encoder(encoder: nn.Module, unlocked_blocks: Optional[int], unlock_norms: bool = False, key: str = "lock") -> int:
    """Freeze ``encoder`` except its last ``unlocked_blocks`` blocks and what follows them (0: all
    frozen; None: nothing changes); ``unlock_norms`` keeps norm layers and biases trainable.
    Returns the number of parameters (elements) left trainable."""
    if unlocked_blocks is None:
        return sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    if isinstance(unlocked_blocks, bool) or not isinstance(unlocked_blocks, int) or unlocked_blocks < 0:
        raise ConfigError(f"{key}.unlocked_blocks must be null or an int >= 0, got {unlocked_blocks!r}")
    named = list(encoder.named_parameters())
    start = len(named)
    if unlocked_blocks > 0:
        name, blocks = find_blocks(encoder)
        if not blocks:
            raise ConfigError(f"{key}.unlocked_blocks={unlocked_blocks}: {type(encoder).__name__} has no list of blocks to count from "
                              "(use 0 to lock it whole)")
        if unlocked_blocks > len(blocks):
            raise ConfigError(f"{key}.unlocked_blocks={unlocked_blocks} but {type(encoder).__name__} has {len(blocks)} blocks ({name})")
        first = {id(p) for p in blocks[len(blocks) - unlocked_blocks].parameters()}
        start = next(i for i, (_, p) in enumerate(named) if id(p) in first)
    for i, (_, p) in enumerate(named):
        p.requires_grad_(i >= start)
    if unlock_norms:
        for module in encoder.modules():
            if isinstance(module, NORMS):
                module.requires_grad_(True)
        for name, p in named:
            if name.endswith("bias"):
                p.requires_grad_(True)
    return sum(p.numel() for p in encoder.parameters() if p.requires_grad)


def layer_lr_scales(encoder: nn.Module, decay: float, key: str = "lr_decay") -> dict:
    """Layer-wise learning-rate decay (BEiT, ELECTRA; open_clip fine-tuning recipes): ``{parameter:
    scale}`` with ``decay ** depth``, depth 0 for the last block and what follows it (final norm,
    projection), ``k`` for the ``k``-th block from the top, ``L`` (the number of blocks) for what
    comes before the blocks (embeddings)."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ConfigError(f"{key} must be in (0, 1], got {decay!r}")
    name, blocks = find_blocks(encoder)
    if not blocks:
        raise ConfigError(f"{key}={decay}: {type(encoder).__name__} has no list of blocks to decay over")
    depth_of = {id(p): len(blocks) - 1 - i for i, block in enumerate(blocks) for p in block.parameters()}
    scales, seen_blocks = {}, False
    for _, p in encoder.named_parameters():
        if id(p) in depth_of:
            seen_blocks = True
            scales[p] = float(decay) ** depth_of[id(p)]
        else:  # before the blocks: the deepest; after them: like the last block
            scales[p] = 1.0 if seen_blocks else float(decay) ** len(blocks)
    return scales
