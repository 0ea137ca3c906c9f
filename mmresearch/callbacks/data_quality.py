"""``DataQuality``: reports the training samples skipped in each epoch and stops a run whose data
is too broken (the share of skipped samples passes ``data.max_skipped_fraction``).

Reads the data module's :class:`~mmresearch.data.skips.SkipLedger` (data modules without one,
such as the built-in data, are left alone). Counts are summed over all ranks, so every rank sees
the same figures and stops together. The per-epoch figures go to the loggers
(``data/skipped_fraction``, ``data/skipped_<reason>``), to the log, and to ``results.json``.
"""

from __future__ import annotations

import logging
from typing import Dict

import lightning as L
import torch

from mmresearch.data.skips import REASONS, SkipLedger, check_fraction, format_counts

log = logging.getLogger(__name__)


class DataQuality(L.Callback):
    """Args:
    check_every_n_batches: also check the running share every this many training batches
        (0: at epoch ends only), so a stream of bad data stops early, not after an epoch.
    min_samples: samples an epoch must have tried before a mid-epoch check can stop the run.
    """

    def __init__(self, check_every_n_batches: int = 100, min_samples: int = 1000) -> None:
        self.check_every_n_batches = int(check_every_n_batches)
        self.min_samples = int(min_samples)

    @staticmethod
    def _ledger(trainer: L.Trainer):
        ledger = getattr(getattr(trainer, "datamodule", None), "skip_ledger", None)
        return ledger if isinstance(ledger, SkipLedger) else None

    @staticmethod
    def _reduced(trainer: L.Trainer, ledger: SkipLedger) -> tuple[Dict[str, int], int]:
        """This epoch's counts summed over ranks: ``({reason: n}, used)``."""
        counts = torch.tensor([ledger.epoch_used] + [ledger.epoch_skipped.get(r, 0) for r in REASONS], dtype=torch.float64)
        counts = trainer.strategy.reduce(counts.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        values = [int(round(float(v))) for v in counts]
        return dict(zip(REASONS, values[1:])), values[0]

    def _limit(self, trainer: L.Trainer) -> float:
        return float(getattr(trainer.datamodule, "max_skipped_fraction", 0.01))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        ledger = self._ledger(trainer)
        if ledger is None or self.check_every_n_batches <= 0 or (batch_idx + 1) % self.check_every_n_batches:
            return
        skipped, used = self._reduced(trainer, ledger)
        if used + sum(skipped.values()) >= self.min_samples:
            check_fraction(f"training epoch {trainer.current_epoch} (after {batch_idx + 1} batches)", skipped, used,
                           self._limit(trainer), ledger.examples)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ledger = self._ledger(trainer)
        if ledger is None:
            return
        skipped, used = self._reduced(trainer, ledger)
        share = SkipLedger.fraction(skipped, used)
        ledger.history.append({"epoch": int(trainer.current_epoch), "used": used, "skipped": {k: v for k, v in skipped.items() if v},
                               "fraction": round(share, 6)})
        metrics = {"data/skipped_fraction": share, **{f"data/skipped_{k}": float(v) for k, v in skipped.items()}}
        pl_module.log_dict({k: float(v) for k, v in metrics.items()}, sync_dist=False, rank_zero_only=True)
        if trainer.is_global_zero:
            log.info("epoch %d data: %d training samples used, skipped: %s (%.3f%%)", trainer.current_epoch, used,
                     format_counts(skipped), 100 * share)
        ledger.reset_epoch()
        check_fraction(f"training epoch {trainer.current_epoch}", skipped, used, self._limit(trainer), ledger.examples)
