"""Fault tolerance: a run killed with SIGKILL mid-epoch and resumed with ``ckpt_path=last`` ends
exactly where the uninterrupted run ends (same weights, optimizer, metrics), for the dual encoder
and for ALBEF (momentum model and queue); a preemption signal checkpoints at a step boundary."""

import json
import signal

import pytest
import torch

from helpers import REPO, run_cli

pytestmark = pytest.mark.slow

# 6 steps an epoch, 2 epochs; last.ckpt every 2 steps, so the kill at step 9 (epoch 1, batch 3)
# loses one step and the run resumes mid-epoch from step 8
BASE = ["data.train_size=192", "data.val_size=64", "data.test_size=64", "data.batch_size=32", "data.eval_batch_size=64",
        "trainer.max_epochs=2", "trainer.precision=32-true", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "num_threads=1", "callbacks.step_checkpoint.every_n_train_steps=2", "callbacks.evaluation_plots=null", "callbacks.linear_probe=null"]
FAMILIES = {
    "dual_encoder": [],
    "albef": ["experiment=albef_shapes", "trainer.max_epochs=2", "trainer.precision=32-true", "model.queue_size=48", "model.embed_dim=32",
              "model.retrieval.top_k=4", "data.test_size=32", "data.val_size=32"],
}
ENV = {"PYTHONPATH": str(REPO / "tests")}
KILL_AT_STEP = ["+callbacks.fault._target_=fault_injection.SignalAtStep", "+callbacks.fault.step=9", "+callbacks.fault.signal=KILL"]


def _run(args, run_dir):
    return run_cli([*args, f"hydra.run.dir={run_dir}"], cwd=REPO, env_extra=ENV)


def _state(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, family):
    args = [*BASE, *FAMILIES[family]]
    full = _run(args, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-4000:]

    killed = _run([*args, *KILL_AT_STEP], tmp_path / "resumed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    assert not (tmp_path / "resumed" / "results.json").exists()
    mid = _state(tmp_path / "resumed" / "checkpoints" / "last-step.ckpt")
    assert mid["global_step"] == 8 and mid["epoch"] == 1  # a mid-epoch resume point, newer than last.ckpt (step 6)
    assert _state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 6

    resumed = _run([*args, "ckpt_path=last"], tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Restoring states from the checkpoint path" in resumed.stdout + resumed.stderr

    a, b = _state(tmp_path / "full" / "checkpoints" / "last.ckpt"), _state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 12
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"weights/buffers differ after resume: {differ[:5]}"
    if family == "albef":
        assert any("queue" in k for k in a["state_dict"]) and any("momentum" in k for k in a["state_dict"])
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ma = json.loads((tmp_path / "full" / "results.json").read_text())["metrics"]
    mb = json.loads((tmp_path / "resumed" / "results.json").read_text())["metrics"]
    assert ma == mb


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    proc = _run(BASE, run_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


@pytest.mark.parametrize("signal_step", [7, 5], ids=["mid-epoch", "last-batch-of-epoch"])
def test_preemption_signal_checkpoints_at_a_step_boundary_and_resumes(tmp_path, uninterrupted, signal_step):
    """Outside SLURM the signal saves hpc_ckpt_1.ckpt at the step boundary and stops without
    validating or testing (a signal during an epoch's last batch waits for that epoch's end);
    resuming from it finishes with the uninterrupted run's weights."""
    run_dir = tmp_path / "preempted"
    proc = _run([*BASE, "+callbacks.fault._target_=fault_injection.SignalAtStep", f"+callbacks.fault.step={signal_step}",
                 "+callbacks.fault.signal=USR1"], run_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "saved the preemption checkpoint" in proc.stdout + proc.stderr
    assert not (run_dir / "results.json").exists()  # no test after a preemption
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    state = _state(hpc)
    assert state["global_step"] == signal_step + 1  # the signalled step ran to its end; the signal came before its batch
    assert "rng_states" in state and state["loops"]["fit_loop"]["state_dict"]["combined_loader"]

    resumed = _run([*BASE, f"ckpt_path={hpc}"], run_dir)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a, b = _state(uninterrupted / "checkpoints" / "last.ckpt"), _state(run_dir / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 12
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert json.loads((run_dir / "results.json").read_text())["metrics"] == json.loads((uninterrupted / "results.json").read_text())["metrics"]
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # removed once the run completed
    assert (run_dir / "csv" / "metrics.csv").exists() and (run_dir / "csv" / "restart1" / "metrics.csv").exists()  # both parts logged


def test_last_without_a_checkpoint_fails_with_one_line(tmp_path):
    """Lightning would warn (suggesting save_last) and train from scratch with exit status 0."""
    proc = _run([*BASE, "ckpt_path=last"], tmp_path)
    assert proc.returncode != 0
    assert f"ckpt_path=last: no last checkpoint (last*.ckpt) in {tmp_path / 'checkpoints'} to resume from" in proc.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "csv").exists()  # nothing trained
