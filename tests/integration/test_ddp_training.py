"""2-process DDP on the CPU (gloo) through Lightning, launched from the Hydra CLI like a user would."""

import json

import pytest

from helpers import FAST, REPO, run_cli

pytestmark = pytest.mark.slow


def test_ddp_cpu_trains_and_writes_one_results_file(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*FAST, "trainer=ddp_cpu", "data.train_negatives=true", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["trainer"]["devices"] == 2 and results["config"]["trainer"]["strategy"] == "ddp"
    assert 0.0 <= results["metrics"]["test/t2i_R@1"] <= 1.0
    # one run directory, no stray output dirs created by the second process
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert not (tmp_path / "outputs").exists()
