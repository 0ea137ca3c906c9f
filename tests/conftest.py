"""Test-wide settings: offline hub, few threads, quiet tokenizers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

from typing import List  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose ``conf/train.yaml`` with overrides, output into ``tmp_path``."""
    from mmresearch.train import CONFIG_DIR

    def _compose(overrides: List[str]) -> DictConfig:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
        return cfg

    return _compose
