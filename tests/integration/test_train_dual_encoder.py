"""The dual encoder trains from the real Hydra config tree and leaves a complete results.json."""

import json

import pytest

from mmresearch.train import train

from helpers import FAST, REPO, run_cli

pytestmark = pytest.mark.slow

RESULT_KEYS = ["test/i2t_R@1", "test/i2t_R@5", "test/i2t_R@10", "test/t2i_R@1", "test/t2i_R@5", "test/t2i_R@10", "test/rsum",
               "test/i2t_MRR", "test/t2i_MRR", "test/i2t_mAP", "test/t2i_mAP"]


def test_cli_run_writes_results_json_and_checkpoints(tmp_path):
    proc = run_cli([*FAST, f"hydra.run.dir={tmp_path}"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for key in RESULT_KEYS:
        assert 0.0 <= results["metrics"][key] <= (6.0 if key.endswith("rsum") else 1.0), key
    assert results["config"]["loss"]["_target_"].endswith("InfoNCELoss")
    assert results["config"]["data"]["train_size"] == 256
    assert results["git_commit"] is None or len(results["git_commit"]) >= 40
    assert results["versions"]["torch"] and results["versions"]["lightning"]
    assert results["wall_time_s"] > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert results["best_checkpoint"] and "best-epoch" in results["best_checkpoint"]
    assert (tmp_path / "csv" / "metrics.csv").exists()
    assert "test/t2i_R@1" in proc.stdout  # the final table


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=infonce", "temperature=fixed"],
        ["loss=siglip", "temperature=siglip"],
        ["loss=triplet"],
        ["loss=ntxent", "temperature=scheduled", "temperature.steps=3"],
        ["loss=margin"],
        ["image_encoder=vit_tiny", "model.towers.image.head.kind=mlp", "text_encoder.pooling=mean"],
    ],
    ids=["infonce-fixed", "siglip", "triplet", "ntxent-scheduled", "margin", "vit-mlp-mean"],
)
def test_every_loss_and_swap_trains_from_config(compose_cfg, overrides):
    cfg = compose_cfg([*FAST, *overrides])
    metrics = train(cfg)
    assert {"test/t2i_R@1", "test/rsum", "val/rsum"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN


def test_wandb_logger_runs_offline_beside_csv(tmp_path):
    proc = run_cli([*FAST, "logger=wandb", "test=false", f"hydra.run.dir={tmp_path}"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "wandb did not write an offline run"
    assert (tmp_path / "csv" / "metrics.csv").exists()
