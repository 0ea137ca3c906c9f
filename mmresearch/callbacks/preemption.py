"""Save, stop and requeue when SLURM warns that the job is about to end (time limit or preemption).

SLURM sends a signal some time before it kills a job (``#SBATCH --signal=USR1@120`` in the
templates under ``slurm/``; submitit sends ``USR2``). Lightning's own SLURM auto-requeue saves the
checkpoint *inside* the signal handler, which can run in the middle of a backward pass or a
collective and is known to hang or write a torn checkpoint (Lightning issue #21406). Here the
handler only records the signal. At the next training-step boundary every rank learns whether any
rank got it (one boolean all-reduce), they all save one checkpoint together, training stops, and
after ``trainer.fit`` returns :meth:`PreemptionCheckpoint.requeue` puts the job back in the queue.

The checkpoint is written as ``<default_root_dir>/hpc_ckpt_<n>.ckpt``. The requeued job (same job
id, so the same run directory in the templates) runs with ``resume=auto``
(:mod:`mmresearch.utils.resume`: ``slurm/launch.sh`` passes it, the submitit launcher configs set
``MMR_RESUME=auto``) and resumes at the same global step with the optimizer, LR scheduler,
temperature, queues, momentum model, RNG states (:class:`~mmresearch.callbacks.rng_state.RNGState`)
and the position in the epoch's data (the training loader is a ``StatefulDataLoader``).

Outside SLURM the same signal saves the checkpoint and stops, and the log names the
``ckpt_path=`` to resume from. SLURM's preemption (as opposed to the time limit) sends SIGTERM
unless the cluster sets ``PreemptParameters=send_user_signal``; that is not handled here.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback

from mmresearch.utils.checkpoint import HPC_PREFIX

log = logging.getLogger(__name__)



def next_hpc_checkpoint_path(root: str | os.PathLike) -> Path:
    """``<root>/hpc_ckpt_<n>.ckpt`` with ``n`` one above the highest present (1 when none)."""
    versions = [int(m.group(1)) for p in Path(root).glob(f"{HPC_PREFIX}*.ckpt") if (m := re.fullmatch(rf"{HPC_PREFIX}(\d+)\.ckpt", p.name))]
    return Path(root) / f"{HPC_PREFIX}{max(versions, default=0) + 1}.ckpt"


def slurm_job_id() -> Optional[str]:
    """The id ``scontrol requeue`` takes for this job (``<array job>_<task>`` for array jobs)."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class PreemptionCheckpoint(Callback):
    """Checkpoint at a step boundary on a preemption signal, stop, and requeue the SLURM job.

    Args:
        signals: signal names to handle (``USR1`` for the sbatch templates, ``USR2`` for submitit).
        requeue: requeue the job after the checkpoint (under SLURM). Under submitit its own handler
            does it (it resubmits the same Hydra job); otherwise ``scontrol requeue <job id>``.
    """

    def __init__(self, signals: Sequence[str] = ("USR1", "USR2"), requeue: bool = True) -> None:
        self.signals = [self._signal(name) for name in signals]
        self.requeue_enabled = bool(requeue)
        self.received: Optional[int] = None
        self._at_epoch_end = False  # a signal during an epoch's last batch: save after its validation
        self.checkpoint_path: Optional[Path] = None
        self._previous: Dict[int, Any] = {}
        self._pid: Optional[int] = None

    @staticmethod
    def _signal(name: str) -> signal.Signals:
        full = name if str(name).startswith("SIG") else f"SIG{name}"
        if not hasattr(signal, full):
            raise ValueError(f"callbacks.preemption.signals: unknown signal {name!r}")
        return signal.Signals[full]

    @property
    def preempted(self) -> bool:
        """True once the checkpoint has been written and training was told to stop."""
        return self.checkpoint_path is not None

    # ------------------------------------------------------------------------------------------
    # signal handling: record only

    def _record(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker inherited the handler
            return
        if self.received is None:
            log.warning("received %s: saving a checkpoint at the next step boundary", signal.Signals(signum).name)
        self.received = signum

    def remove_stale_checkpoints(self, trainer: L.Trainer) -> None:
        """After a fit that ran to its end: delete this run's ``hpc_ckpt_*`` (collective). Under
        SLURM Lightning would otherwise resume *and test* from the newest of them."""
        if trainer.is_global_zero:
            for path in Path(trainer.default_root_dir).glob(f"{HPC_PREFIX}*.ckpt"):
                path.unlink(missing_ok=True)
        trainer.strategy.barrier("remove_stale_hpc_checkpoints")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._pid = os.getpid()
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._record)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for sig, handler in self._previous.items():  # requeue() still finds them in _previous
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    # ------------------------------------------------------------------------------------------
    # the checkpoint, at a point every rank reaches

    def _any_rank_signalled(self, trainer: L.Trainer) -> bool:
        return trainer.strategy.reduce_boolean_decision(self.received is not None or self._at_epoch_end, all=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.preempted or self._at_epoch_end:
            return
        accumulate = trainer.accumulate_grad_batches
        last = batch_idx + 1 >= trainer.num_training_batches
        if accumulate > 1 and (batch_idx + 1) % accumulate != 0 and not last:
            return  # between micro-batches of one optimizer step (the same batch_idx on every rank)
        if not self._any_rank_signalled(trainer):
            return
        if last:
            # Lightning resumes cleanly from a checkpoint taken at the end of the epoch (after its
            # validation and the checkpoint callbacks), not from one inside its last batch
            self._at_epoch_end = True
            return
        self._save_and_stop(trainer)
        # should_stop alone would still run a validation pass (and its checkpoints) inside the
        # grace period; nothing after this checkpoint is needed
        trainer.fit_loop.epoch_loop._skip_next_val = True  # (Lightning 2.x internal flag)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a signal during the epoch's last batch or its validation
        if not self.preempted and self._any_rank_signalled(trainer):
            # Lightning runs the checkpoint callbacks after this one; their end-of-epoch save (the
            # best model by val/rsum) must be in the preemption checkpoint's callback states.
            # Run it first: their own call then sees this step saved and skips.
            for callback in trainer.checkpoint_callbacks:
                callback.on_train_epoch_end(trainer, pl_module)
            self._save_and_stop(trainer)

    def _save_and_stop(self, trainer: L.Trainer) -> None:
        path = next_hpc_checkpoint_path(trainer.default_root_dir) if trainer.is_global_zero else None
        path = Path(trainer.strategy.broadcast(str(path) if path else None, src=0))
        trainer.save_checkpoint(path)
        self.checkpoint_path = path
        trainer.should_stop = True
        if trainer.fit_loop.min_epochs or trainer.fit_loop.min_steps:
            log.warning("trainer.min_epochs/min_steps can keep training going after the preemption checkpoint")
        log.warning("saved the preemption checkpoint %s at global step %d; stopping", path, trainer.global_step)

    # ------------------------------------------------------------------------------------------
    # after fit

    def requeue(self, is_global_zero: bool) -> Optional[str]:
        """Requeue the SLURM job after a preemption checkpoint (global rank zero only).

        Returns how it was done (``"submitit"``, ``"scontrol"``) or ``None`` when nothing was
        requeued (not preempted, not rank zero, not under SLURM, or ``requeue=False``)."""
        if not (self.preempted and is_global_zero and self.requeue_enabled):
            if self.preempted and is_global_zero:
                log.warning("not requeued; resume with ckpt_path=%s", self.checkpoint_path)
            return None
        # under submitit its handler (for whichever signal it uses) does the requeue, even when
        # another rank, not this one, received the signal
        for sig, previous in self._previous.items():
            if callable(previous) and getattr(previous, "__module__", "").startswith("submitit"):
                log.warning("handing the requeue to submitit")
                previous(sig, None)  # checkpoints its DelayedSubmission, requeues, exits
                return "submitit"
        job = slurm_job_id()
        if job is None:
            log.warning("not running under SLURM; resume with ckpt_path=%s", self.checkpoint_path)
            return None
        try:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.error("scontrol requeue %s failed: %s; resume with ckpt_path=%s", job, err, self.checkpoint_path)
            return None
        if result.returncode != 0:
            log.error("scontrol requeue %s failed (%d): %s; resume with ckpt_path=%s", job, result.returncode, result.stderr.strip(), self.checkpoint_path)
            return None
        log.warning("requeued SLURM job %s; it resumes from %s", job, self.checkpoint_path)
        return "scontrol"
