"""mmr-eval with ``data.*``, ``data=<option>`` and ``model.*`` on a tiny checkpoint: the run's
preprocessing is what the evaluation uses unless the command line sets it, and a COCO-format set
with only val2017 evaluates with the default COCO config."""

from __future__ import annotations

import json

import pytest
import torch
from real_fixtures import captions_for, write_coco, write_images

from helpers import FAST, REPO, run_cli, train_once

pytestmark = pytest.mark.slow

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
QUIET = ["eval=retrieval", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few steps on the built-in data with non-default normalisation and text length."""
    return train_once(tmp_path_factory.mktemp("run") / "train", [*FAST, "data.mean=[0.4,0.4,0.4]", "data.std=[0.2,0.2,0.2]",
                                                                  "data.max_text_length=24", "callbacks.linear_probe=null",
                                                                  "callbacks.evaluation_plots=null", "callbacks.zero_shot=null"])


def _eval(args, out):
    proc = run_cli([*args, *QUIET, f"hydra.run.dir={out}"], cwd=REPO, module="mmresearch.eval", timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


def test_data_key_changes_one_key_of_the_runs_data(trained, tmp_path):
    results = _eval([f"ckpt_path={trained}", "data.test_size=32"], tmp_path)
    data = results["config"]["data"]
    assert data["test_size"] == 32 and data["mean"] == [0.4] * 3 and data["max_text_length"] == 24
    assert 0 <= results["metrics"]["test/rsum"] <= 6


def test_other_data_option_keeps_the_runs_preprocessing(trained, tmp_path):
    data = _eval([f"ckpt_path={trained}", "data=shapes", "data.test_size=32", "data.max_text_length=20"], tmp_path)["config"]["data"]
    assert data["mean"] == [0.4] * 3 and data["std"] == [0.2] * 3  # the run's, not the option's 0.5
    assert data["max_text_length"] == 20 and data["test_size"] == 32  # what the command line set


def test_model_key_changes_the_runs_model(trained, tmp_path):
    results = _eval([f"ckpt_path={trained}", "model.eval_chunk_size=16", "data.test_size=32"], tmp_path)
    assert results["config"]["model"]["eval_chunk_size"] == 16


def test_misspelled_run_key_is_one_line(trained, tmp_path):
    proc = run_cli([f"ckpt_path={trained}", "data.test_sze=32", f"hydra.run.dir={tmp_path}"], cwd=REPO, module="mmresearch.eval", timeout=300)
    assert proc.returncode != 0
    assert "data.test_sze is not a key of the evaluated run's config. Did you mean data.test_size?" in proc.stderr


@pytest.fixture
def lit_like_checkpoint(compose_cfg, tmp_path):
    """An (untrained) real-data checkpoint with ImageNet statistics and 48 tokens, like the LiT run."""
    from real_fixtures import tiny_tokenizer

    from mmresearch.models.builder import build_model
    from mmresearch.utils.checkpoint import config_container
    from mmresearch.utils.instantiate import build

    cfg = compose_cfg(["data=flickr8k_mini", f"data.transform.mean={IMAGENET[0]}", f"data.transform.std={IMAGENET[1]}",
                       "data.max_text_length=48", "data.image_size=32", "trainer.precision=32-true"])
    tokenizer = tiny_tokenizer()
    model = build_model(cfg, tokenizer, build(cfg, "data", tokenizer=tokenizer))
    path = tmp_path / "lit.ckpt"
    torch.save({"state_dict": model.state_dict(), "mmresearch_config": config_container(cfg)}, path)
    return path


def test_coco_val2017_alone_evaluates_with_the_runs_preprocessing(lit_like_checkpoint, tmp_path):
    root = tmp_path / "coco"  # no train2017, no captions_train2017.json
    names = write_images(root / "val2017", 6)
    (root / "annotations").mkdir()
    write_coco(root / "annotations" / "captions_val2017.json", captions_for(names, 5))
    results = _eval([f"ckpt_path={lit_like_checkpoint}", "data=coco", f"data.root={root}", "data.num_workers=0"], tmp_path / "eval")
    data = results["config"]["data"]
    assert (data["transform"]["mean"], data["transform"]["std"]) == IMAGENET and data["max_text_length"] == 48 and data["image_size"] == 32
    assert data["test"]["path"].endswith("captions_val2017.json") and 0 <= results["metrics"]["test/rsum"] <= 6
