"""experiments/benchmarks/data_pipeline.py: a tiny run of the default (shapes) case reports
consistent figures and writes its JSON; the webdataset case's shards hold the folder case's
training split."""

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from helpers import load_benchmark  # noqa: E402
from real_fixtures import FLICKR_MINI  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("data_pipeline")


def test_shapes_case_reports_consistent_figures(bench, tmp_path):
    out = tmp_path / "results.json"
    # 32 training images: 4 batches of 8 per epoch, so the loader also crosses epoch ends
    report = bench.main(["--cases", "shapes", "--batches", "3", "--warmup", "1", "--rounds", "2", "--num-workers", "0",
                         "--override", "data.train_size=32", "data.batch_size=8", "--out", str(out)])
    assert list(report["cases"]) == ["shapes"]
    r = report["cases"]["shapes"]
    assert r["batch_size"] == 8 and r["num_workers"] == 0 and r["precision"] == "bf16-mixed"
    assert r["batches_per_epoch"] == 4
    a, b, c = r["loader_samples_per_s"], r["step_samples_per_s"], r["train_samples_per_s"]
    assert a > 0 and b > 0 and c > 0
    assert r["loader_over_step"] == pytest.approx(a / b, rel=1e-12)
    assert r["train_over_step"] == pytest.approx(c / b, rel=1e-12)
    assert r["train_over_step_median"] > 0
    assert r["other_cpu_max"] is None or 0 <= r["other_cpu_max"] <= 1
    for key, rate in zip("abc", (a, b, c)):
        detail = r["detail"][key]
        # two rounds (a b c, then c b a) of 3 timed batches of 8, pooled
        assert [len(run["intervals"]) for run in detail["rounds"]] == [3, 3] and detail["samples"] == 2 * 3 * 8
        assert detail["seconds"] == pytest.approx(sum(run["seconds"] for run in detail["rounds"]), rel=1e-12)
        assert rate == pytest.approx(detail["samples"] / detail["seconds"], rel=1e-12)
    assert r["bottleneck"] == (r["train_over_step"] < 0.9)
    assert r["verdict"].startswith("loader is not" if not r["bottleneck"] else "loader IS")

    written = json.loads(out.read_text())
    assert written["machine"]["cpu_count"] == os.cpu_count() and written["machine"]["torch"]
    assert written["threshold"] == 0.9
    got = written["cases"]["shapes"]
    for key in ("loader_samples_per_s", "step_samples_per_s", "train_samples_per_s", "loader_over_step", "train_over_step"):
        assert got[key] == pytest.approx(r[key], rel=1e-15)
    table = bench.format_table(report["cases"], 0.9)
    assert "shapes" in table and "c/b >= 0.9" in table


def test_verdicts(bench):
    assert bench.verdict(5.0, 0.95, 0.95, 2, 0, 0.9) == "loader is not the bottleneck"
    assert bench.verdict(5.0, 0.90, 0.80, 2, 0, 0.9) == "loader is not the bottleneck"  # the threshold is included
    assert "slower than the step" in bench.verdict(0.8, 0.7, 0.7, 2, 0, 0.9)
    assert "main process" in bench.verdict(5.0, 0.8, 0.8, 0, 0, 0.9)
    assert "epoch starts" in bench.verdict(5.0, 0.8, 0.95, 2, 1, 0.9)
    assert "take CPU" in bench.verdict(5.0, 0.8, 0.8, 2, 1, 0.9)


def test_unknown_case_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--cases", "shapes,nope"])


@pytest.mark.skipif(not FLICKR_MINI.exists(), reason="../shared/data/flickr8k-mini is not present")
def test_webdataset_shards_hold_the_training_split(bench, tmp_path):
    from mmresearch.data.image_text import _source, read_source, split_by_image
    from mmresearch.data.webdataset import expand_urls

    prep = bench.prepare_webdataset(tmp_path, num_workers=2)
    manifest = prep["manifest"]
    # the folder case's training split (experiment=lit_flickr8k: 700 of the 1,000 images)
    cfg = bench.compose_cfg([bench.LIT])
    spec = _source(cfg.data.train, "train", None)
    split = dict(cfg.data.split)
    train = split_by_image(read_source(spec, "train").items, split, split.pop("seed"))["train"]
    pairs = sum(len(item.captions) for item in train)
    assert manifest["num_samples"] == prep["train_images"] == len(train) == 700
    assert prep["train_pairs"] == pairs == 3500
    assert manifest["skipped"] == {}
    # equal shards, a multiple of the 2 workers
    shards = expand_urls(manifest["urls"])
    assert len(shards) == 4 and all(Path(s).is_file() for s in shards)
    from webdataset.tariterators import tarfile_samples

    captions, images = 0, set()
    for sample in tarfile_samples([{"url": s} for s in shards]):
        record = json.loads(sample["json"])
        captions += len(record["captions"])
        images.add(record["image"])
    assert captions == pairs and images == {item.image for item in train}
    # the case's overrides compose into a webdataset source over these shards
    wcfg = bench.compose_cfg(prep["overrides"])
    assert wcfg.data.train.format == "webdataset" and wcfg.data.train.num_samples == 700
    assert expand_urls(wcfg.data.train.urls) == shards
    assert wcfg.data.batch_size == 64 and wcfg.data.image_size == 224
