"""Learning-rate schedules, built from transformers' well-kept implementations."""

from __future__ import annotations

from typing import Optional

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from mmresearch.utils.errors import ConfigError


def cosine_with_warmup(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: Optional[int] = None,
    warmup_ratio: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warmup then cosine decay to ``min_lr_ratio * lr`` at ``total_steps``.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is the peak learning rate.
        total_steps: optimizer steps of the whole run (the module passes
            ``trainer.estimated_stepping_batches``).
        warmup_steps: warmup length in steps; when None, ``warmup_ratio * total_steps``.
        warmup_ratio: warmup as a fraction of the run.
        min_lr_ratio: the final learning rate as a fraction of the peak.
    """
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigError(f"scheduler.warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"scheduler.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    warmup = int(warmup_steps) if warmup_steps is not None else int(round(warmup_ratio * total_steps))
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup, num_training_steps=max(int(total_steps), 1), min_lr_rate=min_lr_ratio
    )
