"""ViLT from the CLI: pretraining with fused retrieval, VQA fine-tuning from it, mmr-eval, DDP."""

import json

import pytest

from helpers import FAST, REPO, run_cli, train_once

pytestmark = pytest.mark.slow

SMALL = [*FAST, "experiment=vilt_shapes", "image_encoder.model_kwargs.embed_dim=64", "image_encoder.model_kwargs.depth=2",
         "text_encoder.config.hidden_size=64", "data.test_size=48", "data.val_size=32"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return train_once(tmp_path_factory.mktemp("vilt") / "pretrain", SMALL)


def test_pretraining_reports_fused_retrieval_and_itm(pretrained):
    metrics = json.loads((pretrained / "results.json").read_text())["metrics"]
    for key in ("test/t2i_R@1", "test/i2t_R@1", "test/rsum", "test/itm_acc", "test/comp_acc", "test/pairs_scored", "test/first_stage/rsum"):
        assert key in metrics, key
    # a first stage with top_k=16 over 48 images and 240 captions fuses the union of candidates only
    assert 0 < metrics["test/pairs_scored"] <= 240 * 16 + 48 * 16
    assert metrics["test/pairs_scored"] < 240 * 48
    assert "test/vqa_score" not in metrics  # no VQA head in pretraining


def test_vqa_finetunes_from_the_pretrained_run(pretrained, tmp_path):
    proc = run_cli([*SMALL, "experiment=vilt_vqa", f"model.init_from={pretrained}", f"hydra.run.dir={tmp_path}"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = json.loads((tmp_path / "results.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/vqa_score"] <= 1.0
    assert "test/t2i_R@1" not in metrics  # retrieval off in the VQA experiment
    assert "tensors loaded" in proc.stderr + proc.stdout


def test_mmr_eval_reproduces_the_vilt_test_metrics(pretrained, tmp_path):
    proc = run_cli(["ckpt_path=" + str(pretrained), "eval=retrieval", f"hydra.run.dir={tmp_path}", "trainer.enable_progress_bar=false"],
                   cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-6000:]
    got = json.loads((tmp_path / "results.json").read_text())["metrics"]
    want = json.loads((pretrained / "results.json").read_text())["metrics"]
    for key in ("test/rsum", "test/first_stage/rsum", "test/pairs_scored"):
        assert got[key] == pytest.approx(want[key]), key


def test_vilt_trains_with_two_ddp_processes(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*SMALL, "trainer=ddp_cpu", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/t2i_R@1"] <= 1.0 and metrics["test/pairs_scored"] > 0
