"""``EpochMetrics``: one log line per validation with every ``val/`` metric, and the metric that
picks the best checkpoint on the progress bar.

The line starts with the monitored metric (the best-checkpoint callback's ``monitor``, e.g.
``val/rsum``) and its best value so far, then the other validation metrics in name order::

    epoch 2 step 540 | val/rsum 2.4813 (best 2.4813) | val/comp_acc 0.7120 | val/i2t_MRR 0.6011 | ...

It goes to the log, so the run's log file has the validation history of every epoch.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


def _best_checkpoint(trainer: L.Trainer) -> Optional[ModelCheckpoint]:
    """The first checkpoint callback that monitors a metric (the one that keeps the best model)."""
    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)


def _best_so_far(callback: ModelCheckpoint, value: float) -> float:
    """``value`` or the best score ``callback`` has kept so far (restored on resume), by its mode."""
    kept = callback.best_model_score
    if kept is None or not math.isfinite(float(kept)):
        return value
    return max(value, float(kept)) if callback.mode == "max" else min(value, float(kept))


def format_epoch_line(epoch: int, step: int, metrics: Dict[str, float], monitor: Optional[str] = None,
                      best: Optional[float] = None, prefix: str = "val/") -> str:
    """``epoch E step S | <monitor> v (best b) | <other metrics> ...`` of the ``prefix`` metrics."""
    parts = [f"epoch {epoch} step {step}"]
    if monitor is not None and monitor in metrics:
        parts.append(f"{monitor} {metrics[monitor]:.4f}" + (f" (best {best:.4f})" if best is not None else ""))
    parts += [f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith(prefix) and k != monitor]
    return " | ".join(parts)


class EpochMetrics(L.Callback):
    """Logs :func:`format_epoch_line` after every validation (not the sanity check) on global rank
    zero and shows the monitored metric on the progress bar.

    Args:
        monitor: the metric to lead with and show on the bar; None takes the best-checkpoint
            callback's ``monitor``.
    """

    def __init__(self, monitor: Optional[str] = None) -> None:
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        if not metrics:
            return
        checkpoint = _best_checkpoint(trainer)
        monitor = self.monitor or (checkpoint.monitor if checkpoint is not None else None)
        if monitor in metrics:
            # the progress bar shows trainer.progress_bar_metrics; it refreshes after this hook
            trainer.progress_bar_metrics[monitor] = metrics[monitor]
        if trainer.is_global_zero:
            best = None
            if checkpoint is not None and monitor == checkpoint.monitor and monitor in metrics:
                best = _best_so_far(checkpoint, metrics[monitor])
            log.info("%s", format_epoch_line(trainer.current_epoch, trainer.global_step, metrics, monitor, best))
