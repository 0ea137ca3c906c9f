"""Fixtures for tests that compose the real Hydra config tree."""

from __future__ import annotations

from typing import List

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from mmresearch.train import CONFIG_DIR


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
