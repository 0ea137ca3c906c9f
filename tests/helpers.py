"""Shared helpers for tests that run the real CLI (importable because pytest adds tests/ to sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]

# A run that takes seconds: tiny splits, a few steps, fp32.
FAST = [
    "data.train_size=256",
    "data.val_size=64",
    "data.test_size=64",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "num_threads=1",
]


def run_cli(args: List[str], cwd: Path, timeout: int = 600, env_extra: dict | None = None, module: str = "mmresearch.train") -> subprocess.CompletedProcess:
    """Run ``python -m mmresearch.train`` like a user would."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_workers(test_file: str, run_name: str, world: int, out_dir: Path, timeout: int = 120) -> list:
    """Run ``test_file`` as ``world`` spawned processes (module ``__name__ == run_name``, with
    ``WORKER_ARGS = {rank, port, out_dir}`` in its globals); each writes ``rank{r}.pt`` (or
    ``rank{r}.err`` with its traceback). Returns the loaded per-rank results."""
    import runpy

    import torch

    port = free_port()
    ctx = torch.multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=runpy.run_path,
            args=(test_file,),
            kwargs={"init_globals": {"WORKER_ARGS": {"rank": rank, "port": port, "out_dir": str(out_dir)}}, "run_name": run_name},
        )
        for rank in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    errors = [f.read_text() for f in sorted(Path(out_dir).glob("rank*.err"))]
    codes = [p.exitcode for p in procs]
    assert not errors and codes == [0] * world, f"workers failed (exit codes {codes}):\n" + "\n".join(errors)
    return [torch.load(Path(out_dir) / f"rank{rank}.pt") for rank in range(world)]


def train_once(run_dir: Path, overrides: List[str]) -> Path:
    """Train through the CLI into ``run_dir`` (for module-scoped fixtures); fails with stderr."""
    proc = run_cli([*overrides, f"hydra.run.dir={run_dir}"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return run_dir


def run_gloo_worker(rank: int, port: int, out_dir: str, world: int, body) -> None:
    """The body of a worker started by :func:`spawn_workers`: joins a gloo group on one thread,
    saves ``body(rank)`` as ``rank{rank}.pt`` (or the traceback as ``rank{rank}.err``)."""
    import traceback
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=60))
        torch.save(body(rank), Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def load_benchmark(name: str):
    """Import ``experiments/benchmarks/<name>.py`` (not a package) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "experiments" / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: the shipped losses: the options of config group `loss` (conf/loss/<name>.yaml)
LOSS_NAMES = sorted(p.stem for p in (REPO / "conf" / "loss").glob("*.yaml"))


def make_loss(name: str, **overrides):
    """The loss of ``conf/loss/<name>.yaml`` (its ``_target_`` and options), with ``overrides``:
    built the way ``loss=<name>`` builds it (Hydra's ``_target_``, no registry of our own)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.merge(OmegaConf.load(REPO / "conf" / "loss" / f"{name}.yaml"), overrides))
