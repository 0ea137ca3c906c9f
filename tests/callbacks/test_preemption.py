"""PreemptionCheckpoint: the handler only records; the checkpoint waits for a step boundary; requeue."""

import os
import signal
from types import SimpleNamespace

import pytest

from mmresearch.callbacks import preemption as mod
from mmresearch.callbacks.preemption import PreemptionCheckpoint, next_hpc_checkpoint_path, slurm_job_id


class FakeStrategy:
    def reduce_boolean_decision(self, decision, all=True):
        return decision

    def broadcast(self, obj, src=0):
        return obj


class FakeTrainer:
    def __init__(self, root):
        self.default_root_dir = str(root)
        self.strategy = FakeStrategy()
        self.is_global_zero = True
        self.global_step = 5
        self.should_stop = False
        self.saved = []
        self.accumulate_grad_batches = 1
        self.num_training_batches = 10
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(_skip_next_val=False), min_epochs=None, min_steps=None)

    def save_checkpoint(self, path):
        self.saved.append(path)
        open(path, "wb").close()


def test_hpc_checkpoint_numbering(tmp_path):
    assert next_hpc_checkpoint_path(tmp_path).name == "hpc_ckpt_1.ckpt"
    (tmp_path / "hpc_ckpt_1.ckpt").touch()
    (tmp_path / "hpc_ckpt_7.ckpt").touch()
    (tmp_path / "hpc_ckpt_x.ckpt").touch()
    assert next_hpc_checkpoint_path(tmp_path).name == "hpc_ckpt_8.ckpt"


def test_job_id_of_plain_and_array_jobs(monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert slurm_job_id() == "42"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "40_3"


def test_signal_is_only_recorded_then_checkpointed_at_the_step_boundary(tmp_path):
    cb = PreemptionCheckpoint(signals=["USR1"])
    trainer = FakeTrainer(tmp_path)
    previous = signal.getsignal(signal.SIGUSR1)
    cb.setup(trainer, None, "fit")
    try:
        cb.on_train_batch_end(trainer, None, None, None, 0)
        assert not trainer.saved and not cb.preempted  # no signal yet
        os.kill(os.getpid(), signal.SIGUSR1)
        assert cb.received == signal.SIGUSR1 and not trainer.saved  # the handler wrote nothing
        cb.on_train_batch_end(trainer, None, None, None, 1)
        assert [p.name for p in trainer.saved] == ["hpc_ckpt_1.ckpt"] and trainer.should_stop and cb.preempted
        assert trainer.fit_loop.epoch_loop._skip_next_val  # no validation pass inside the grace period
        cb.on_train_batch_end(trainer, None, None, None, 2)
        assert len(trainer.saved) == 1  # once
    finally:
        cb.teardown(trainer, None, "fit")
    assert signal.getsignal(signal.SIGUSR1) == previous


def test_requeue_calls_scontrol_with_the_job_id(tmp_path, monkeypatch):
    cb = PreemptionCheckpoint(signals=["USR1"])
    cb.received, cb.checkpoint_path = signal.SIGUSR1, tmp_path / "hpc_ckpt_1.ckpt"
    calls = []
    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or SimpleNamespace(returncode=0, stderr=""))
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert cb.requeue(is_global_zero=False) is None and not calls
    assert cb.requeue(is_global_zero=True) == "scontrol" and calls == [["scontrol", "requeue", "17"]]
    monkeypatch.delenv("SLURM_JOB_ID")
    assert cb.requeue(is_global_zero=True) is None  # outside SLURM: the log names the checkpoint


def test_unknown_signal_names_the_config_key():
    with pytest.raises(ValueError, match="callbacks.preemption.signals"):
        PreemptionCheckpoint(signals=["NOPE"])


def test_waits_for_the_end_of_a_gradient_accumulation_cycle(tmp_path):
    cb = PreemptionCheckpoint(signals=["USR1"])
    trainer = FakeTrainer(tmp_path)
    trainer.accumulate_grad_batches = 4
    cb.received = signal.SIGUSR1
    cb.on_train_batch_end(trainer, None, None, None, 1)  # micro-batch 2 of 4
    assert not trainer.saved
    cb.on_train_batch_end(trainer, None, None, None, 3)  # the optimizer step
    assert len(trainer.saved) == 1


def test_stale_hpc_checkpoints_are_removed_after_a_completed_fit(tmp_path):
    (tmp_path / "hpc_ckpt_1.ckpt").touch()
    (tmp_path / "keep.ckpt").touch()
    trainer = FakeTrainer(tmp_path)
    trainer.strategy.barrier = lambda name=None: None
    PreemptionCheckpoint().remove_stale_checkpoints(trainer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ckpt"]
