"""Helpers for tests that compose the real Hydra config tree and train for a few steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from mmresearch.train import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]

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


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose ``conf/train.yaml`` with overrides, output into ``tmp_path``."""

    def _compose(overrides: List[str]) -> DictConfig:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
        return cfg

    return _compose


def run_cli(args: List[str], cwd: Path, timeout: int = 600, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m mmresearch.train`` like a user would."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "mmresearch.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
