"""An evaluation reads only the split it evaluates: COCO's config draws validation images from
train2017, and a COCO-format directory with only val2017 and its captions still evaluates."""

from __future__ import annotations

import pytest
from real_fixtures import captions_for, tiny_tokenizer, write_coco, write_images

from mmresearch.utils.instantiate import build


@pytest.fixture
def val_only_coco(tmp_path):
    """``<root>/val2017/*.jpg`` and ``<root>/annotations/captions_val2017.json``; no training split."""
    root = tmp_path / "coco"
    names = write_images(root / "val2017", 5)
    (root / "annotations").mkdir()
    write_coco(root / "annotations" / "captions_val2017.json", captions_for(names, 5))
    return root


def test_default_coco_config_evaluates_without_train2017(compose_cfg, val_only_coco):
    cfg = compose_cfg(["data=coco", f"data.root={val_only_coco}", "data.image_size=32", "data.num_workers=0"])
    dm = build(cfg, "data", tokenizer=tiny_tokenizer())
    dm.setup("test")
    assert len(dm.test_dataset) == 5 and set(dm._splits) == {"test"}
    batch = next(iter(dm.test_dataloader()))
    assert batch.num_images == 5 and batch.num_texts == 25


def test_validation_only_reads_the_validation_source(tmp_path):
    from real_fixtures import write_csv

    from mmresearch.data.image_text import ImageTextDataModule

    names = write_images(tmp_path / "images", 4)
    val = write_csv(tmp_path / "val.csv", captions_for(names[:2], 2))
    source = {"format": "csv", "path": str(val), "image_root": str(tmp_path / "images")}
    missing = {"format": "csv", "path": str(tmp_path / "nowhere.csv")}
    dm = ImageTextDataModule(tiny_tokenizer(), train=missing, val=source, test=missing, image_size=32, batch_size=2)
    dm.setup("validate")
    assert len(dm.val_dataset) == 2 and set(dm._splits) == {"val"}
