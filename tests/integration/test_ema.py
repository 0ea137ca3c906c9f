"""``callbacks.ema`` (Lightning's EMAWeightAveraging): the run's checkpoints hold the averaged
weights, the test reports them (``test/*``) and the trained weights beside them
(``test/trained/*``), and ``mmr-eval`` of the checkpoint reproduces the averaged figures."""

import json

import pytest
import torch

from helpers import FAST, REPO, run_cli

pytestmark = pytest.mark.slow

EMA = "callbacks.ema={_target_: lightning.pytorch.callbacks.EMAWeightAveraging, decay: 0.5}"


def test_averaged_and_trained_weights_are_both_tested(tmp_path):
    run = tmp_path / "run"
    proc = run_cli([*FAST, EMA, f"hydra.run.dir={run}"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads((run / "results.json").read_text())
    metrics = results["metrics"]
    assert "test/rsum" in metrics and "test/trained/rsum" in metrics
    checkpoint = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)
    averaged, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged if averaged[k].is_floating_point())
    proc = run_cli([f"ckpt_path={run}", "eval=retrieval", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'eval'}"],
                   cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-5000:]
    again = json.loads((tmp_path / "eval" / "results.json").read_text())["metrics"]
    assert again["test/rsum"] == pytest.approx(metrics["test/rsum"])
