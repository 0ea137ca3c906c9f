"""``mmr-train`` on real-data formats, like a user runs it: a CSV with broken files (skipped,
counted, reported in results.json; too many stop the run), WebDataset shards under 2-process
DDP, and the real flickr8k-mini data through its config."""

from __future__ import annotations

import json

import pytest
from real_fixtures import FLICKR_MINI, captions_for, write_corrupt, write_csv, write_images

from helpers import REPO, run_cli
from mmresearch.data.formats import read_table
from mmresearch.data.write_shards import write_shards

pytestmark = pytest.mark.slow

QUICK = [
    "tokenizer=minilm",
    "data.image_size=32",
    "data.transform.model=resnet10t",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.evaluation_plots=null",
    "num_threads=1",
]


def _broken_csv(tmp_path):
    images = tmp_path / "images"
    names = write_images(images, 24)
    write_corrupt(images, "img003.jpg", truncated_from=images / "img002.jpg")  # 3 captions: 3 bad pairs an epoch
    path = write_csv(tmp_path / "captions.csv", captions_for(names, 3))
    path.write_bytes(path.read_bytes() + b"gone.jpg,a photo that is not there\n")
    return path


def _csv_source(path):
    """data=csv with the broken table for training and a clean one for val and test."""
    images = path.parent / "images"
    clean = write_csv(path.parent / "eval.csv", captions_for(["img010.jpg", "img011.jpg", "img012.jpg"], 2))
    return ["data=csv", f"data.train.path={path}", f"data.train.image_root={images}", "data.train.image_key=image",
            "data.train.caption_key=caption", f"data.val.path={clean}", f"data.val.image_root={images}",
            f"data.test.path={clean}", f"data.test.image_root={images}"]


def test_broken_files_are_skipped_counted_and_reported(tmp_path):
    path = _broken_csv(tmp_path)
    run_dir = tmp_path / "run"
    args = [*_csv_source(path), *QUICK, "data.caption_sampling=all", "data.max_skipped_fraction=0.2", f"hydra.run.dir={run_dir}"]
    proc = run_cli(args, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-6000:]
    quality = json.loads((run_dir / "results.json").read_text())["data_quality"]
    assert quality["setup"]["skipped"] == {"missing_image": 1} and quality["setup"]["samples"] == 73
    epochs = quality["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    for epoch in epochs:  # 72 pairs in 9 batches of 8; the corrupt image's 3 pairs left out, none replaced
        assert epoch["skipped"] == {"corrupt_image": 3} and epoch["used"] == 69
    assert any("img003.jpg" in name for name in quality["examples"]["corrupt_image"])
    assert "corrupt_image=3" in proc.stderr + proc.stdout  # the per-epoch report


def test_too_many_skipped_samples_stop_the_run(tmp_path):
    path = _broken_csv(tmp_path)
    # set-up: 1 missing of 73 samples (1.4%) passes 2%; the first epoch: 3 corrupt of 72 (4.2%) does not
    args = [*_csv_source(path), *QUICK, "data.caption_sampling=all", "data.max_skipped_fraction=0.02", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli(args, cwd=REPO)
    assert proc.returncode != 0
    assert "DataQualityError: training epoch 0: 4.17% of the samples were skipped (corrupt_image=3; 69 used)" in proc.stderr
    assert "max_skipped_fraction=0.02" in proc.stderr and "img003.jpg" in proc.stderr
    # at the default 1% the missing file already stops it at set-up, naming the file
    args[args.index("data.max_skipped_fraction=0.02")] = "data.max_skipped_fraction=0.01"
    proc = run_cli(args, cwd=REPO)
    assert proc.returncode != 0 and "reading data.train" in proc.stderr and "gone.jpg" in proc.stderr


def test_webdataset_shards_under_ddp(tmp_path):
    images = tmp_path / "images"
    names = write_images(images, 40)
    write_corrupt(images, "img007.jpg", truncated_from=images / "img006.jpg")
    table = write_csv(tmp_path / "all.csv", captions_for(names, 2))
    ann = read_table(table)
    manifest = write_shards(ann.items, str(images), tmp_path / "shards", samples_per_shard=8, verify=False)
    assert len(manifest["shards"]) == 5 and manifest["num_samples"] == 40
    evaluation = write_csv(tmp_path / "eval.csv", captions_for(names[10:16], 2))
    run_dir = tmp_path / "run"
    args = [
        # the brace pattern is quoted: braces are Hydra syntax
        "data=webdataset", f"data.train.urls='{manifest['urls']}'", "data.train.num_samples=32", "data.train.shuffle_buffer=8",
        f"data.val.path={evaluation}", f"data.val.image_root={images}", f"data.test.path={evaluation}", f"data.test.image_root={images}",
        *QUICK, "data.batch_size=4", "data.num_workers=1", "data.max_skipped_fraction=0.5", "trainer=ddp_cpu",
        "trainer.max_epochs=2", "trainer.precision=32-true", f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli(args, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = json.loads((run_dir / "results.json").read_text())
    epochs = results["data_quality"]["epochs"]
    assert len(epochs) == 2
    for epoch in epochs:
        # 2 ranks x 4 batches of 4 samples were drawn; the corrupt sample (if drawn) is skipped and
        # the other rank's batch is cut to the same size
        drawn = epoch["used"] + sum(epoch["skipped"].values())
        assert drawn == 32
        assert epoch["skipped"].get("corrupt_image", 0) == epoch["skipped"].get("ddp_balance", 0) <= 1
    assert 0.0 <= results["metrics"]["test/t2i_R@1"] <= 1.0


@pytest.mark.skipif(not FLICKR_MINI.exists(), reason="../shared/data/flickr8k-mini is not present")
def test_flickr8k_mini_config_trains(tmp_path):
    run_dir = tmp_path / "run"
    args = ["data=flickr8k_mini", *QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.split.val=20", "data.split.test=20",
            f"paths.data_dir={FLICKR_MINI.parent}", f"hydra.run.dir={run_dir}"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data_quality"]["setup"] == {"samples": 5000, "skipped": {}, "fraction": 0.0}
    assert results["data_quality"]["epochs"][0]["used"] == 16
    assert results["config"]["data"]["split"] == {"val": 20, "test": 20, "seed": 0}
