"""The fused model families from the CLI: pretraining with first-stage + ITM-rerank retrieval, VQA
fine-tuning from it, mmr-eval reproducing the test metrics, and 2-process DDP."""

import json

import pytest

from helpers import FAST, REPO, run_cli, train_once

pytestmark = pytest.mark.slow

FAMILIES = {
    # family: (pretraining overrides, VQA experiment, top_k)
    "vilt": ([*FAST, "experiment=vilt_shapes", "image_encoder.model_kwargs.embed_dim=64", "image_encoder.model_kwargs.depth=2",
              "text_encoder.config.hidden_size=64", "data.test_size=48", "data.val_size=32"], "vilt_vqa", 8),
    "albef": ([*FAST, "experiment=albef_shapes", "model.queue_size=64", "model.embed_dim=32", "data.test_size=48", "data.val_size=32",
               "model.retrieval.top_k=8"], "albef_vqa", 8),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def pretrained(request, tmp_path_factory):
    overrides, vqa, top_k = FAMILIES[request.param]
    return request.param, train_once(tmp_path_factory.mktemp(request.param) / "pretrain", overrides)


def test_pretraining_reports_first_stage_and_rerank_retrieval(pretrained):
    family, run_dir = pretrained
    top_k = FAMILIES[family][2]
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    for key in ("test/t2i_R@1", "test/i2t_R@1", "test/rsum", "test/itm_acc", "test/comp_acc", "test/pairs_scored", "test/first_stage/rsum",
                "test/first_stage/t2i_R@1", "test/zeroshot_colour_top1", "test/probe_colour_acc"):
        assert key in metrics, key
    # the first stage picks top_k per query both ways over 48 images and 240 captions: only the
    # union of those candidates is fused
    assert 0 < metrics["test/pairs_scored"] <= 240 * top_k + 48 * top_k
    assert metrics["test/pairs_scored"] < 240 * 48
    assert "test/vqa_score" not in metrics  # no VQA head in pretraining


def test_vqa_finetunes_from_the_pretrained_run(pretrained, tmp_path):
    family, run_dir = pretrained
    overrides, vqa, _ = FAMILIES[family]
    proc = run_cli([*overrides, f"experiment={vqa}", f"model.init_from={run_dir}", f"hydra.run.dir={tmp_path}"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = json.loads((tmp_path / "results.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/vqa_score"] <= 1.0
    assert "test/t2i_R@1" not in metrics  # retrieval off in the VQA experiments
    assert "tensors loaded" in proc.stderr + proc.stdout


def test_mmr_eval_reproduces_the_test_metrics(pretrained, tmp_path):
    _, run_dir = pretrained
    proc = run_cli(["ckpt_path=" + str(run_dir), "eval=retrieval", f"hydra.run.dir={tmp_path}", "trainer.enable_progress_bar=false"],
                   cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-6000:]
    got = json.loads((tmp_path / "results.json").read_text())["metrics"]
    want = json.loads((run_dir / "results.json").read_text())["metrics"]
    for key in ("test/rsum", "test/first_stage/rsum", "test/pairs_scored"):
        assert got[key] == pytest.approx(want[key]), key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_trains_with_two_ddp_processes(family, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*FAMILIES[family][0], "trainer=ddp_cpu", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/t2i_R@1"] <= 1.0 and metrics["test/pairs_scored"] > 0
