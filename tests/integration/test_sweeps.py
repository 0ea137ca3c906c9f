"""Hydra multirun sweeps: one directory and results.json per point (also with 2-process DDP in
each point), W&B names/groups from the sweep, seeds deterministic on CPU, and mmr-ablate's table."""

import json

import pytest

from helpers import FAST, REPO, run_cli

pytestmark = pytest.mark.slow

QUIET = [*FAST, "callbacks.evaluation_plots=null", "callbacks.linear_probe=null", "callbacks.zero_shot=null"]


def test_sweep_over_a_group_and_seeds_then_ablation_table(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["--multirun", *QUIET, "logger=wandb", "loss=infonce,triplet", "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    points = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert points == ["0", "1", "2", "3"]
    seen = set()
    for point in points:
        results = json.loads((sweep / point / "results.json").read_text())
        overrides = results["hydra"]["overrides"]
        loss, seed = overrides[-2], overrides[-1]
        seen.add((loss, seed))
        wandb = results["config"]["logger"]["wandb"]
        assert wandb["name"] == ",".join(sorted(overrides))  # Hydra's override_dirname
        assert wandb["group"] == f"train/{sweep.name}"
        assert wandb["job_type"] == ",".join(sorted(o for o in overrides if not o.startswith("seed=")))
        assert list((sweep / point / "wandb").glob("offline-run-*"))
        assert (sweep / point / "csv" / "metrics.csv").exists()
    assert seen == {(f"loss={l}", f"seed={s}") for l in ("infonce", "triplet") for s in (0, 1)}
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()

    out = tmp_path / "table"
    proc = run_cli([str(sweep), "--metrics", "test/t2i_R@1", "test/rsum", "--plot", "test/rsum", "--out", str(out)], cwd=REPO, module="mmresearch.ablate")
    assert proc.returncode == 0, proc.stderr
    md = out.with_suffix(".md").read_text()
    assert "| loss | seeds |" in md and "| infonce | 2 |" in md.replace("**", "") and "| triplet | 2 |" in md.replace("**", "")
    assert out.with_suffix(".png").exists() and out.with_suffix(".tex").exists() and out.with_suffix(".csv").exists()


def test_a_seed_gives_the_same_metrics_twice_on_cpu(tmp_path):
    metrics = []
    for name in ("a", "b"):
        proc = run_cli([*QUIET, "seed=3", f"hydra.run.dir={tmp_path / name}"], cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-4000:]
        metrics.append(json.loads((tmp_path / name / "results.json").read_text())["metrics"])
    assert metrics[0] == metrics[1]
    other = run_cli([*QUIET, "seed=4", f"hydra.run.dir={tmp_path / 'c'}"], cwd=REPO)
    assert other.returncode == 0
    assert json.loads((tmp_path / "c" / "results.json").read_text())["metrics"] != metrics[0]


def test_ddp_inside_every_sweep_point_without_directory_clashes(tmp_path):
    """Lightning starts rank 1 of each point itself; it must join that point, not re-run the sweep."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["--multirun", *QUIET, "trainer=ddp_cpu", "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    for point, seed in (("0", 0), ("1", 1)):
        results = json.loads((sweep / point / "results.json").read_text())
        assert results["config"]["seed"] == seed and results["config"]["trainer"]["devices"] == 2
        assert (sweep / point / "train_ddp_process_1.log").exists()  # rank 1 ran in this point's directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # nothing written elsewhere
