"""Every real-data entry of ``conf/data/`` composes and builds from the overrides its comment
shows, on fixture files laid out like the real data sets, and gives the usual batches."""

from __future__ import annotations

import pytest
from real_fixtures import captions_for, write_coco, write_csv, write_images, write_karpathy

from mmresearch.data.batch import ImageTextBatch
from mmresearch.data.write_shards import write_shards
from mmresearch.utils.instantiate import build

QUICK = ["data.image_size=32", "data.transform.model=resnet10t", "data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0"]


def _build(compose_cfg, overrides):
    cfg = compose_cfg(["tokenizer=shapes", *QUICK, *overrides])
    from mmresearch.data.tokenizer import build_shapes_tokenizer

    dm = build(cfg, "data", tokenizer=build_shapes_tokenizer())
    dm.setup()
    train = next(iter(dm.train_dataloader()))
    test = next(iter(dm.test_dataloader()))
    assert isinstance(train, ImageTextBatch) and train.is_paired and train.images.shape == (4, 3, 32, 32)
    assert test.num_texts >= test.num_images
    return dm


def test_karpathy_config(compose_cfg, tmp_path):
    names = write_images(tmp_path / "val2014", 16)
    (tmp_path / "annotations").mkdir()
    caps = {f"val2014/{n}": c for n, c in captions_for(names, 5).items()}
    items = list(caps.items())
    write_karpathy(tmp_path / "annotations/coco_karpathy_train.json", dict(items[:10]), per_caption=True)
    write_karpathy(tmp_path / "annotations/coco_karpathy_val.json", dict(items[10:13]), per_caption=False)
    write_karpathy(tmp_path / "annotations/coco_karpathy_test.json", dict(items[13:]), per_caption=False)
    dm = _build(compose_cfg, ["data=karpathy", f"data.root={tmp_path}"])
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (10, 3, 3)


def test_coco_config(compose_cfg, tmp_path):
    (tmp_path / "annotations").mkdir()
    train = write_images(tmp_path / "train2017", 12)
    val = write_images(tmp_path / "val2017", 5, seed=1)
    write_coco(tmp_path / "annotations/captions_train2017.json", captions_for(train, 5))
    write_coco(tmp_path / "annotations/captions_val2017.json", captions_for(val, 5))
    dm = _build(compose_cfg, ["data=coco", f"data.root={tmp_path}", "data.split.val=3"])
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (9, 3, 5)  # val drawn from train2017
    assert dm.test_dataset.paths[0].startswith(str(tmp_path / "val2017"))


def test_csv_config_with_tsv_and_own_columns(compose_cfg, tmp_path):
    names = write_images(tmp_path, 12)
    caps = captions_for(names, 2)
    train = write_csv(tmp_path / "train.tsv", dict(list(caps.items())[:8]), "filepath", "title", sep="\t")
    val = write_csv(tmp_path / "val.tsv", dict(list(caps.items())[8:10]), "filepath", "title", sep="\t")
    test = write_csv(tmp_path / "test.tsv", dict(list(caps.items())[10:]), "filepath", "title", sep="\t")
    dm = _build(compose_cfg, ["data=csv", f"data.train.path={train}", f"data.val.path={val}", f"data.test.path={test}"])
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (8, 2, 2)


def test_webdataset_config(compose_cfg, tmp_path):
    from mmresearch.data.formats import read_table

    names = write_images(tmp_path / "images", 16)
    table = write_csv(tmp_path / "all.csv", captions_for(names, 2))
    manifest = write_shards(read_table(table).items, str(tmp_path / "images"), tmp_path / "shards", samples_per_shard=4)
    dm = _build(compose_cfg, ["data=webdataset", f"data.train.urls='{manifest['urls']}'", f"data.train.num_samples={manifest['num_samples']}",
                              f"data.val.path={table}", f"data.val.image_root={tmp_path / 'images'}",
                              f"data.test.path={table}", f"data.test.image_root={tmp_path / 'images'}"])
    assert len(dm.train_dataloader()) == 4


def test_missing_required_paths_name_the_key(compose_cfg):
    from mmresearch.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.root: required \(\?\?\? in the config\)"):
        _build(compose_cfg, ["data=karpathy"])
    with pytest.raises(ConfigError, match=r"data.test.path, data.train.path, data.val.path: required"):
        _build(compose_cfg, ["data=csv"])
