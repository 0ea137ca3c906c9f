"""What a researcher reads: ``mmr-train`` and ``mmr-eval`` consoles without third-party notices,
one model summary of the real parts, the monitored metric on the progress bar, one metrics table,
the paths written; ``train.log`` holds the per-epoch validation metrics and the final table."""

import re

import pytest

from helpers import REPO, run_cli

pytestmark = pytest.mark.slow

# the run's defaults (bf16 autocast, progress bar, model summary), tiny
TINY = ["data.train_size=256", "data.val_size=64", "data.test_size=64", "data.batch_size=32", "data.eval_batch_size=64",
        "trainer.max_epochs=2", "trainer.limit_train_batches=2", "num_threads=1"]
# what the console showed before: third-party deprecations and tips, Lightning's own test table
NOISE = ["set_vital", "LeafSpec", "is not supported by the model summary", "multiple `ModelCheckpoint`", "Tip:", "litlogger",
         "litmodels", "Test metric", "DataLoader 0", "Skipping setting a default `ModelSummary`"]


def _assert_quiet(console: str) -> None:
    shown = [n for n in NOISE if n in console]
    assert not shown, f"noise on the console: {shown}\n{console[-6000:]}"
    assert len(re.findall(r"test/t2i_R@1\b", console)) == 1, console[-6000:]  # one metrics table


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("console") / "train"
    # a wide console: Rich (not on a terminal here) prints the bar's last state on one line
    proc = run_cli([*TINY, f"hydra.run.dir={run_dir}"], cwd=REPO, env_extra={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-6000:]
    return run_dir, proc.stdout + proc.stderr


def test_train_console_is_quiet_with_one_table(run):
    run_dir, console = run
    _assert_quiet(console)
    assert f"test metrics ({run_dir / 'results.json'})" in console


def test_model_summary_lists_the_real_parts_without_metrics_or_flops(run):
    _, console = run
    assert console.count("towers.image ") == 1 and "towers.text " in console and "objectives.image_text " in console and "Trainable" in console
    for absent in ("RetrievalMetric", "CompositionalityMetric", "val_retrieval", "FLOPs", "Flops"):
        assert absent not in console, absent


def test_progress_bar_shows_the_checkpoint_metric(run):
    _, console = run
    # the last state of the training bar: its loss and the metric that picks the best checkpoint
    assert any("train/loss" in line and "val/rsum" in line for line in re.split(r"[\r\n]", console)), console[-3000:]


def test_paths_written_are_printed(run):
    run_dir, console = run
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and f"best checkpoint: {best[0]}" in console
    assert f"log: {run_dir / 'train.log'}" in console


def test_train_log_holds_the_epoch_metrics_and_the_final_table(run):
    run_dir, _ = run
    text = (run_dir / "train.log").read_text()
    assert re.search(r"epoch 0 .*val/rsum \d\.\d{4}", text) and re.search(r"epoch 1 .*val/rsum \d\.\d{4}", text), text
    assert "test/t2i_R@1" in text and f"test metrics ({run_dir / 'results.json'})" in text


def test_eval_console_is_quiet_with_one_table(run, tmp_path):
    run_dir, _ = run
    proc = run_cli([f"ckpt_path={run_dir}", "num_threads=1", f"hydra.run.dir={tmp_path}"], cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-6000:]
    console = proc.stdout + proc.stderr
    _assert_quiet(console)
    assert str(tmp_path / "results.json") in console and "test/t2i_R@1" in (tmp_path / "eval.log").read_text()
