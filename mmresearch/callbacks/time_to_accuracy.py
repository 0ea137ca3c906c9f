"""Time to accuracy: the training wall time at which a retrieval metric of an evaluation split first
reaches a target (the MLPerf-style measure of how fast a recipe trains).

After every ``every_n_epochs`` training epochs the split (``test`` by default) is evaluated with
the model's own retrieval metric (the same code as ``trainer.test``), and the time since the fit
started is recorded with the value, the epoch and the optimizer step. The clock stops during these
checks: their time is reported separately and is not part of the training time. Validation, which
the run does anyway, is part of it.

This is a benchmark: choosing when to stop from the test split is fine for measuring speed, not for
selecting a model. Results: ``time_to_accuracy.json`` in the run directory, and the ``tta/*``
metrics in the loggers. The checks and the clock are kept in checkpoints: a resumed run goes on
from the time it had reached.

The metric is the retrieval of the model's shared embedding space (``embed_images`` /
``embed_texts``); for ALBEF that is its first stage (ITC), not the reranked test result. Under
DDP every rank embeds the whole split (the metric drops repeated ids, so nothing counts twice);
that costs evaluation time, which is off the clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import move_data_to_device, rank_zero_info

from mmresearch.evaluation.metric import RetrievalMetric, add_embedded_batch
from mmresearch.utils.errors import ConfigError, check_choice

SPLITS = ("test", "val")


class TimeToAccuracy(L.Callback):
    """Record when ``metric`` of ``split`` first reaches ``target``; optionally stop there.

    Args:
        metric: a retrieval metric name (``t2i_R@1``, ``i2t_R@5``, ``rsum``...).
        target: the value to reach (``>=``).
        split: ``test`` or ``val``: which evaluation loader of the data module.
        every_n_epochs: check after every ``n``-th training epoch.
        stop: end training once the target is reached (the learning-rate schedule is unchanged).
        filename: written into ``trainer.default_root_dir`` on global rank zero.
    """

    def __init__(self, metric: str = "t2i_R@1", target: float = 0.9, split: str = "test", every_n_epochs: int = 1,
                 stop: bool = True, filename: str = "time_to_accuracy.json") -> None:
        check_choice("callbacks.time_to_accuracy.split", split, SPLITS)
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ConfigError(f"callbacks.time_to_accuracy.every_n_epochs must be an integer >= 1, got {every_n_epochs!r}")
        self.metric, self.target, self.split = metric, float(target), split
        self.every_n_epochs, self.stop, self.filename = every_n_epochs, bool(stop), filename
        self.checks: List[Dict[str, Any]] = []
        self.reached: Optional[Dict[str, Any]] = None
        self._start = 0.0
        self._paused = 0.0
        self._resumed_seconds = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not getattr(pl_module, "has_embeddings", False):
            raise ConfigError(
                f"callbacks.time_to_accuracy needs a model with a shared embedding space; {type(pl_module).__name__} "
                "has none (set callbacks.time_to_accuracy=null)"
            )
        # a resumed run continues the clock of its checkpoint (load_state_dict ran before this)
        self._start, self._paused = time.perf_counter() - self._resumed_seconds, 0.0

    def state_dict(self) -> Dict[str, Any]:
        return {"checks": self.checks, "reached": self.reached, "train_seconds": self._train_seconds()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.checks = list(state_dict.get("checks", []))
        self.reached = state_dict.get("reached")
        self._resumed_seconds = float(state_dict.get("train_seconds", 0.0))

    def _train_seconds(self) -> float:
        return time.perf_counter() - self._start - self._paused if self._start else self._resumed_seconds

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":  # queued kernels belong to the time before the clock is read
            torch.cuda.synchronize(pl_module.device)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, float]:
        """Retrieval metrics of the split, computed as in the test loop (all ranks take part)."""
        datamodule = trainer.datamodule
        loader = datamodule.test_dataloader() if self.split == "test" else datamodule.val_dataloader()
        metric = RetrievalMetric(chunk_size=getattr(pl_module, "eval_chunk_size", 1024)).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with trainer.precision_plugin.forward_context():
                for batch in loader:
                    add_embedded_batch(metric, pl_module, move_data_to_device(batch, pl_module.device))
            values = metric.compute()
        finally:
            pl_module.train(was_training)
        if self.metric not in values:
            raise ConfigError(f"callbacks.time_to_accuracy.metric={self.metric!r} is not a retrieval metric; choose from {sorted(values)}")
        return {k: float(v) for k, v in values.items()}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0 or self.reached is not None:
            return
        self._sync(pl_module)
        train_seconds = self._train_seconds()
        began = time.perf_counter()
        values = self.evaluate(trainer, pl_module)
        self._sync(pl_module)
        self._paused += time.perf_counter() - began
        check = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, "train_seconds": train_seconds,
                 "eval_seconds": time.perf_counter() - began, self.metric: values[self.metric]}
        self.checks.append(check)
        pl_module.log_dict({f"tta/{self.split}_{self.metric}": values[self.metric], "tta/train_seconds": train_seconds},
                           sync_dist=False)
        rank_zero_info(f"time to accuracy: {self.split} {self.metric} = {values[self.metric]:.4f} after {train_seconds:.1f} s "
                       f"of training (epoch {check['epoch']}, step {check['step']}; target {self.target})")
        if values[self.metric] >= self.target:
            self.reached = check
            if self.stop:
                trainer.should_stop = True
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        record = {"metric": self.metric, "split": self.split, "target": self.target, "reached": self.reached,
                  "train_seconds_to_target": None if self.reached is None else self.reached["train_seconds"], "checks": self.checks}
        Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
        (Path(trainer.default_root_dir) / self.filename).write_text(json.dumps(record, indent=2))
