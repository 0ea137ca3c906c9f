"""mmr-eval on a checkpoint made here: same metrics as training's test, export, FAISS search,
plots; zero-shot and linear probes far above chance after a short training."""

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, run_cli, train_once

pytestmark = pytest.mark.slow

# 300 steps: enough for zero-shot and probes to leave chance far behind (150 were not: zero-shot
# colour was still at chance while the probes were already far above it)
SHORT = ["data.train_size=9600", "data.batch_size=128", "data.val_size=200", "data.test_size=300", "trainer.max_epochs=4",
         "trainer.precision=32-true", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "num_threads=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_once(tmp_path_factory.mktemp("eval") / "train", SHORT)


def test_zero_shot_and_probes_far_above_chance(trained):
    m = json.loads((trained / "results.json").read_text())["metrics"]
    chance = {"shape": 1 / 5, "colour": 1 / 7, "count": 1 / 3}
    assert m["test/zeroshot_colour_top1"] > 2.5 * chance["colour"], m
    assert m["test/probe_colour_acc"] > 3 * chance["colour"], m
    assert m["test/probe_count_acc"] > 2 * chance["count"], m
    assert m["test/t2i_R@10"] > 10 * 10 / 300, m  # R@10 chance is 10/300
    assert m["test/comp_acc"] > 0.5, m


def test_plots_are_written(trained):
    names = {p.name for p in (trained / "plots").glob("*.png")}
    assert names == {"similarity_heatmap.png", "retrieval_text_to_image.png", "retrieval_image_to_text.png", "embedding_projection.png"}


def test_mmr_eval_reproduces_test_metrics_and_exports(trained, tmp_path):
    proc = run_cli([f"ckpt_path={trained}", "eval=export", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"], cwd=REPO, module="mmresearch.eval")
    assert proc.returncode == 0, proc.stderr[-6000:]
    got = json.loads((tmp_path / "results.json").read_text())
    want = json.loads((trained / "results.json").read_text())["metrics"]
    for key, value in want.items():
        if key.startswith("test/"):
            assert got["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert got["checkpoint"].endswith(".ckpt") and "best" in got["checkpoint"]

    export = tmp_path / "embeddings"
    images = np.load(export / "image_embeddings.npy")
    texts = np.load(export / "text_embeddings.npy")
    captions = json.loads((export / "captions.json").read_text())
    entries = json.loads((export / "images.json").read_text())
    assert images.shape == (300, 128) and texts.shape == (1500, 128) and len(captions) == 1500
    assert all((export / e["path"]).is_file() for e in entries[:5])

    # search with a test caption: the FAISS top-5 equals the brute-force top-5 of the export
    query = captions[7]["caption"]
    out = subprocess.run([sys.executable, "-m", "mmresearch.search", str(export), query, "-k", "5", "--json"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-4000:]
    hits = json.loads(out.stdout[out.stdout.index("["):])[0]["hits"]
    brute = np.argsort(-(images @ texts[7]))[:5]
    assert [h["image_id"] for h in hits] == [entries[i]["id"] for i in brute]
    assert hits[0]["score"] == pytest.approx(float(images[brute[0]] @ texts[7]), abs=1e-4)


def test_mmr_eval_refuses_a_missing_checkpoint(tmp_path):
    proc = run_cli([f"ckpt_path={tmp_path}/nope.ckpt", f"hydra.run.dir={tmp_path}"], cwd=REPO, module="mmresearch.eval")
    assert proc.returncode != 0 and "no such checkpoint" in proc.stderr
