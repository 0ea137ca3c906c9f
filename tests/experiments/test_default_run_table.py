"""experiments/default_run/regenerate.py: renders a run's results.json into the marked README block,
replaces exactly that block in every README and nothing else, and changes nothing when rerun."""

import importlib.util
import json
import re

import pytest

from helpers import FAST, REPO

SCRIPT = REPO / "experiments" / "default_run" / "regenerate.py"


@pytest.fixture(scope="module")
def regen():
    spec = importlib.util.spec_from_file_location("default_run_regenerate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics():
    """Distinct values for every key the block shows, so a swapped cell shows up."""
    keys = [f"test/{d}_{k}" for d in ("t2i", "i2t") for k in ("R@1", "R@5", "R@10", "MRR", "mAP")]
    keys += ["test/comp_acc"] + [f"test/comp_acc_{k}" for k in ("colour", "size", "shape", "relation")]
    keys += [f"test/zeroshot_{k}_top1" for k in ("colour", "shape", "count")] + [f"test/probe_{k}_acc" for k in ("colour", "shape", "count")]
    metrics = {k: round(0.1111 + 0.0417 * i, 4) for i, k in enumerate(keys)}
    metrics["test/rsum"] = round(sum(metrics[f"test/{d}_R@{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10)), 4)
    return metrics


def _write_run(run_dir, metrics, commit="0123456789abcdef0123456789abcdef01234567", overrides=()):
    cfg = {"seed": 3, "data": {"batch_size": 16, "train_size": 320, "test_size": 50, "captions_per_image": 4,
                               "colours": ["red", "green", "blue", "cyan"], "shapes": ["circle", "square"], "count_weights": [1.0, 1.0, 0.0]},
           "trainer": {"max_epochs": 2, "precision": "32-true"}}
    results = {"metrics": metrics, "config": cfg, "git_commit": commit, "versions": {"torch": "9.9.9"},
               "machine": {"python": "3.11", "platform": "Linux-test", "torch_threads": 3}, "wall_time_s": 123.456,
               "hydra": {"overrides": list(overrides)}}
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(results))
    rows = ["epoch,step,train/loss,val/rsum"] + [f"0,{s},1.0," for s in range(20)] + ["0,19,,2.0"]
    (run_dir / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return results


def _readmes(tmp_path, regen, stale="| old | 0.789 |"):
    a = tmp_path / "README.md"
    a.write_text(f"# Title\n\n## Results\n\nbefore\n{regen.BEGIN}\n{stale}\n{regen.END}\nafter: the prose stays\n\n## Next\n")
    b = tmp_path / "sub.md"
    b.write_text(f"intro\n\n{regen.BEGIN}\n{regen.END}\n")
    return a, b


def _outside(text, regen):
    head, rest = text.split(regen.BEGIN + "\n")
    return head, rest.split(regen.END)[1]


def _block(text, regen):
    return text.split(regen.BEGIN + "\n")[1].split("\n" + regen.END)[0]


def test_block_replaced_exactly_and_idempotent(regen, tmp_path):
    run_dir = tmp_path / "run"
    results = _write_run(run_dir, _metrics())
    a, b = _readmes(tmp_path, regen)
    before = {p: _outside(p.read_text(), regen) for p in (a, b)}

    line = regen.main(["--run-dir", str(run_dir), "--readme", str(a), "--readme", str(b)])
    texts = {p: p.read_text() for p in (a, b)}
    for p in (a, b):
        assert _outside(texts[p], regen) == before[p]  # only the marked block changed
        assert _block(texts[p], regen) == regen.render_block(regen.load_run(run_dir))
    assert "0.789" not in texts[a]  # the stale block is gone

    block = _block(texts[a], regen)
    m = results["metrics"]
    for d, label in (("t2i", "text-to-image"), ("i2t", "image-to-text")):
        row = next(r for r in block.splitlines() if r.startswith(f"| {label} |"))
        assert row == f"| {label} | " + " | ".join(f"{m[f'test/{d}_{k}']:.4f}" for k in ("R@1", "R@5", "R@10", "MRR", "mAP")) + " |"
    assert f"`rsum` {m['test/rsum']:.3f}." in block
    assert f"{results['wall_time_s']:.0f} s inside the run" in block
    assert "commit `0123456`" in block and "uncommitted" not in block
    assert "were not recorded (run not started by regenerate.py)" in block  # no command.json in this run
    assert "torch 9.9.9" in block and "3 torch threads" in block and "Linux-test" in block
    cfg = results["config"]["data"]
    assert (f"batch {cfg['batch_size']}, {cfg['train_size']} training images x {results['config']['trainer']['max_epochs']} epochs"
            f" = 20 steps") in block  # the CSV logged steps 0..19
    assert "`mmr-train` (no arguments)" in block and f"seed {results['config']['seed']}" in block
    # after-test evaluations, with chance from the config's classes (4 colours, 2 shapes, 2 object counts)
    assert f"compositionality {m['test/comp_acc']:.3f} (0.5; colour {m['test/comp_acc_colour']:.3f}" in block
    assert f"zero-shot top-1 colour {m['test/zeroshot_colour_top1']:.3f} ({1 / 4:.3g})" in block
    assert f"shape {m['test/zeroshot_shape_top1']:.3f} ({1 / 2:.3g}), count {m['test/zeroshot_count_top1']:.3f} ({1 / 2:.3g})" in block
    assert f"linear probe colour {m['test/probe_colour_acc']:.3f}" in block
    assert f"t2i R@1 {m['test/t2i_R@1']:.4f}" in line and "wrote" in line

    again = regen.main(["--run-dir", str(run_dir), "--readme", str(a), "--readme", str(b)])
    assert {p: p.read_text() for p in (a, b)} == texts  # idempotent
    assert again.endswith("nothing written")


def test_block_states_overrides_and_dirty_commit(regen, tmp_path):
    run_dir = tmp_path / "run"
    _write_run(run_dir, _metrics(), commit="fedcba9876543210fedcba9876543210fedcba98-dirty", overrides=["data.train_size=320", "seed=3"])
    block = regen.render_block(regen.load_run(run_dir))
    assert "`mmr-train data.train_size=320 seed=3`" in block and "no arguments" not in block
    assert "commit `fedcba9` with uncommitted changes;" in block

    # the script started the run at another commit than the one the run set up with (the checkout moved on)
    command = {"argv": ["mmr-train"], "commit_at_start": "0123456789abcdef0123456789abcdef01234567", "command_seconds": 754.0,
               "cpu_count": 2, "cpu_model": "Test CPU", "mean_load": 5.5, "load_samples": [5.0, 6.0]}
    (run_dir / "command.json").write_text(json.dumps(command))
    run = regen.load_run(run_dir)
    block = regen.render_block(run)
    assert ("commit `fedcba9` with uncommitted changes (the checkout was at `0123456` when regenerate.py started the run);"
            in block)
    assert "12 min 34 s for the whole command" in block and "2 CPUs (Test CPU)" in block
    assert "mean 1-minute load average during the run 5.5 on 2 CPUs" in block and "other jobs shared the CPUs" in block
    assert regen.summary(run, []).startswith("default run at fedcba9-dirty:")
    command["commit_at_start"] = "fedcba9876543210fedcba9876543210fedcba98"  # same commit, only edits appeared
    (run_dir / "command.json").write_text(json.dumps(command))
    assert "commit `fedcba9` with uncommitted changes;" in regen.render_block(regen.load_run(run_dir))
    command["mean_load"] = 3.0  # the run's own 3 threads: a quiet machine
    (run_dir / "command.json").write_text(json.dumps(command))
    assert "other jobs" not in regen.render_block(regen.load_run(run_dir))


def test_missing_marker_fails_before_writing_any_file(regen, tmp_path):
    run_dir = tmp_path / "run"
    _write_run(run_dir, _metrics())
    a, b = _readmes(tmp_path, regen)
    b.write_text(f"intro\n{regen.BEGIN}\nno end marker\n")
    original = a.read_text()
    with pytest.raises(regen.TableError, match=re.escape(str(b)) + ".*exactly one line"):
        regen.main(["--run-dir", str(run_dir), "--readme", str(a), "--readme", str(b)])
    assert a.read_text() == original
    with pytest.raises(regen.TableError, match="exactly one line"):
        regen.replace_block(f"{regen.BEGIN}\n{regen.END}\n{regen.BEGIN}\n{regen.END}\n", "x", "two.md")


def test_unusable_run_directory_named(regen, tmp_path):
    a, _ = _readmes(tmp_path, regen)
    with pytest.raises(regen.TableError, match=re.escape(f"{tmp_path / 'nowhere' / 'results.json'}: not a readable results.json")):
        regen.main(["--run-dir", str(tmp_path / "nowhere"), "--readme", str(a)])
    run_dir = tmp_path / "untested"
    metrics = {k: v for k, v in _metrics().items() if k != "test/rsum"}
    _write_run(run_dir, metrics)
    with pytest.raises(regen.TableError, match="no test metrics test/rsum"):
        regen.main(["--run-dir", str(run_dir), "--readme", str(a)])
    with pytest.raises(regen.TableError, match="overrides apply only to a new run"):
        regen.main(["--run-dir", str(run_dir), "--readme", str(a), "--", "seed=1"])


@pytest.mark.slow
def test_tiny_real_run_through_the_script(regen, tmp_path):
    """The script's own training path: a few steps of mmr-train, its results.json in the block."""
    a, b = _readmes(tmp_path, regen)
    run_dir = tmp_path / "run"
    line = regen.main(["--out-dir", str(run_dir), "--readme", str(a), "--readme", str(b), "--", *FAST])
    results = json.loads((run_dir / "results.json").read_text())
    command = json.loads((run_dir / "command.json").read_text())
    assert command["command_seconds"] >= results["wall_time_s"] > 0 and command["argv"] == ["mmr-train", *FAST]
    assert command["cpu_count"] >= 1 and command["load_samples"] and "commit_at_start" in command
    block = _block(a.read_text(), regen)
    assert block == _block(b.read_text(), regen)
    m = results["metrics"]
    assert f"| text-to-image | {m['test/t2i_R@1']:.4f} | {m['test/t2i_R@5']:.4f} |" in block
    assert f"`rsum` {m['test/rsum']:.3f}." in block and f"rsum {m['test/rsum']:.3f}" in line
    assert "`mmr-train " + " ".join(FAST) + "`" in block
    limit = int(next(o for o in FAST if o.startswith("trainer.limit_train_batches=")).split("=")[1])
    assert f"= {limit} steps" in block  # one epoch of limit_train_batches steps
    assert f"{results['machine']['torch_threads']} torch threads" in block and f"{command['cpu_count']} CPUs" in block
    assert "for the whole command" in block and "mean 1-minute load average" in block
    before = a.read_text()
    regen.main(["--run-dir", str(run_dir), "--readme", str(a)])
    assert a.read_text() == before
