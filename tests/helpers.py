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
