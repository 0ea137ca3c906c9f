"""Real SLURM on localhost (see tests/slurm_cluster.py): 2-task CPU DDP through the sbatch template
and through the submitit launcher, and a job that is signalled, checkpoints, is requeued and resumes.
Skips with the reason when a local cluster cannot start (not root, packages missing)."""

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO
from slurm_cluster import LocalSlurm, why_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.skipif(why_unavailable() is not None, reason=f"no local SLURM: {why_unavailable()}")]

TEMPLATE = REPO / "slurm" / "train_single_node.sbatch"
# the template asks for 4 GPUs and 8 CPUs a task; on this CPU node: 2 tasks, 1 CPU each, no GPU
CPU_NODE = ["--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0", "--mem=2000", "--time=20"]
TINY = ["data.train_size=256", "data.val_size=64", "data.test_size=64", "data.batch_size=32", "data.eval_batch_size=64",
        "trainer.precision=32-true", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "num_threads=1",
        "callbacks.evaluation_plots=null", "callbacks.linear_probe=null"]


@pytest.fixture(scope="module")
def slurm():
    # not under pytest's 0700 tmp dirs: munged wants o+x on every directory above its socket
    root = Path(tempfile.mkdtemp(prefix="mmr-slurm-"))
    root.chmod(0o755)
    cluster = LocalSlurm(root).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


def _env(run_dir):
    return {"PYTHON": str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else "python",
            "TRAINER": "ddp_cpu", "RUN_DIR": str(run_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def _log(path):
    return path.read_text() if path.exists() else "(no log)"


def test_sbatch_template_trains_two_task_ddp(slurm, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "job.out"
    job = slurm.sbatch(TEMPLATE, args=[*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=3"],
                       options=[*CPU_NODE, f"--output={log}"], env=_env(run_dir), cwd=REPO)
    info = slurm.wait(job, timeout=420)
    assert info["JobState"] == "COMPLETED", _log(log)[-5000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["trainer"]["devices"] == 2 and results["config"]["trainer"]["strategy"] == "ddp"
    assert 0.0 <= results["metrics"]["test/t2i_R@1"] <= 1.0
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in _log(log)  # rank 1 is a SLURM task


def test_signalled_job_checkpoints_requeues_and_resumes(slurm, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "job.out"
    # 4 steps an epoch (256 pairs, 2 ranks, 32 a batch), 4 epochs; last-step.ckpt after every step tells the test that training runs
    args = [*TINY, "trainer.max_epochs=4", "callbacks.step_checkpoint.every_n_train_steps=1", "test=false"]
    job = slurm.sbatch(TEMPLATE, args=args, options=[*CPU_NODE, f"--output={log}"], env=_env(run_dir), cwd=REPO)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last-step.ckpt").exists():
        assert time.time() < deadline and slurm.job(job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), _log(log)[-5000:]
        time.sleep(0.5)
    # what SLURM does at --signal=USR1@120: the signal to every task of the job step
    slurm._run(["scancel", "--signal=USR1", job])
    info = slurm.wait(job, timeout=420)
    text = _log(log)
    assert info["JobState"] == "COMPLETED", text[-5000:]
    assert int(info["Restarts"]) == 1, text[-5000:]
    assert "saved the preemption checkpoint" in text and "requeued SLURM job" in text
    assert "(restart 1)" in text and f"Restoring states from the checkpoint path at {run_dir / 'hpc_ckpt_1.ckpt'}" in text
    saved_at = int(re.search(r"saved the preemption checkpoint \S+ at global step (\d+)", text).group(1))
    assert 0 < saved_at < 16  # stopped mid-run
    assert not (run_dir / "hpc_ckpt_1.ckpt").exists()  # removed once the requeued job completed
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 16 and final["epoch"] == 3  # the requeued job finished the run
    assert json.loads((run_dir / "results.json").read_text())["metrics"]["val/rsum"] >= 0


def test_submitit_launcher_submits_one_ddp_job_per_sweep_point(slurm, tmp_path):
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "mmresearch.train", "--multirun", "hydra/launcher=submitit_slurm", "trainer=ddp_cpu",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=20", "hydra.launcher.mem_gb=2", f"hydra.sweep.dir={sweep}",
           *TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "seed=0,1"]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(slurm.env, HF_HUB_OFFLINE="1", WANDB_MODE="offline"), capture_output=True, text=True, timeout=600)
    logs = "\n".join(p.read_text()[-3000:] for p in sweep.glob(".submitit/*/*.err")) if sweep.exists() else ""
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    for num, seed in ((0, 0), (1, 1)):
        results = json.loads((sweep / str(num) / "results.json").read_text())
        assert results["config"]["seed"] == seed and results["config"]["trainer"]["devices"] == 2
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "1", "multirun.yaml"]


def test_submitit_job_signalled_checkpoints_and_is_requeued_by_submitit(slurm, tmp_path):
    """The submitit path: USR2 -> checkpoint at a step boundary -> submitit's own handler requeues
    the sweep point -> it resumes from the checkpoint in the same directory and finishes."""
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "mmresearch.train", "--multirun", "hydra/launcher=submitit_slurm", "trainer=ddp_cpu",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=20", "hydra.launcher.mem_gb=2", f"hydra.sweep.dir={sweep}",
           *TINY, "trainer.max_epochs=4", "callbacks.step_checkpoint.every_n_train_steps=1", "test=false", "seed=0"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(slurm.env, HF_HUB_OFFLINE="1", WANDB_MODE="offline"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not (sweep / "0" / "checkpoints" / "last-step.ckpt").exists():
            assert time.time() < deadline and proc.poll() is None, "the job did not start training"
            time.sleep(0.5)
        job = slurm._run(["squeue", "-h", "-o", "%i"]).stdout.split()[0]
        slurm._run(["scancel", "--signal=USR2", job])  # what submitit asks SLURM for before the time limit
        out, _ = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = "\n".join(p.read_text() for p in sorted(sweep.glob(".submitit/*/*_log.*")))
    assert proc.returncode == 0, out[-3000:] + logs[-5000:]
    assert "saved the preemption checkpoint" in logs and "handing the requeue to submitit" in logs, logs[-5000:]
    assert f"Restoring states from the checkpoint path at {sweep / '0' / 'hpc_ckpt_1.ckpt'}" in logs, logs[-5000:]
    info = slurm.job(job)
    assert int(info.get("Restarts", 0)) == 1, info
    final = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 16 and json.loads((sweep / "0" / "results.json").read_text())["metrics"]["val/rsum"] >= 0
