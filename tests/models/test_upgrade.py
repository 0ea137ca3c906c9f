"""Checkpoints written before the objectives and towers (commit d379c1d: fused models with
``model.objectives: {itm: 1.0, ...}`` and ``model.itm``/``model.mlm``; the dual encoder with
``model.image_head``) load as today's models and test as they did when they were written.

The fixtures are tiny real runs of that commit (``tests/fixtures/pre_objectives/<family>/``: the
checkpoint's weights and stored run config, and the test metrics its run reported), made by
``tests/fixtures/pre_objectives/README.md``'s commands."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from mmresearch.models.loading import load_model
from mmresearch.models.upgrade import is_old_format
from mmresearch.utils.checkpoint import load_checkpoint
from mmresearch.utils.instantiate import build

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pre_objectives"
KEYS = ("test/t2i_R@1", "test/i2t_R@1", "test/t2i_R@10", "test/i2t_R@10", "test/rsum", "test/itm_acc", "test/first_stage/rsum", "test/comp_acc")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixtures' runs (num_threads=1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("family", ["dual_encoder", "vilt", "albef"])
def test_an_old_checkpoint_loads_and_tests_as_its_run_reported(family, one_thread):
    path = FIXTURES / family / "last.ckpt"
    assert is_old_format(load_checkpoint(path)["mmresearch_config"]["model"])
    model, cfg, tokenizer = load_model(path)  # strict: every tensor of the checkpoint finds its place
    assert not is_old_format(cfg.model)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    got = trainer.test(model, datamodule=build(cfg, "data", tokenizer=tokenizer), verbose=False)[0]
    want = json.loads((FIXTURES / family / "test_metrics.json").read_text())
    compared = [k for k in KEYS if k in want]
    assert len(compared) >= 5
    for key in compared:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
