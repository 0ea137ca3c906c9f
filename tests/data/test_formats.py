"""Annotation readers: every format gives the same grouped images and captions; bad rows are
counted per reason, never raised or silently turned into captions."""

from __future__ import annotations

import json

import pytest
from real_fixtures import FLICKR_MINI, captions_for, write_coco, write_csv, write_karpathy

from mmresearch.data.formats import read_coco, read_karpathy, read_table
from mmresearch.data.skips import DataError
from mmresearch.utils.errors import ConfigError

CAPTIONS = captions_for(["a.jpg", "b.jpg", "c.jpg"], per_image=3)


def _as_dict(ann):
    return {item.image: item.captions for item in ann.items}


def test_all_formats_agree(tmp_path):
    expected = {k: list(v) for k, v in CAPTIONS.items()}
    anns = [
        read_table(write_csv(tmp_path / "c.csv", CAPTIONS)),
        read_table(write_csv(tmp_path / "c.tsv", CAPTIONS, sep="\t")),  # tab inferred from the suffix
        read_table(write_csv(tmp_path / "o.csv", CAPTIONS, "filepath", "title"), image_key="filepath", caption_key="title"),
        read_karpathy(write_karpathy(tmp_path / "k_train.json", CAPTIONS, per_caption=True)),
        read_karpathy(write_karpathy(tmp_path / "k_test.json", CAPTIONS, per_caption=False)),
        read_coco(write_coco(tmp_path / "coco.json", CAPTIONS)),
    ]
    for ann in anns:
        assert _as_dict(ann) == expected, ann.source
        assert [item.image for item in ann.items] == list(CAPTIONS)  # first-appearance order
        assert ann.samples == 9 and not ann.skipped


def test_csv_bad_rows_counted(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"image,caption\n"
        b"a.jpg,a good caption\n"
        b"a.jpg,   \n"                      # empty caption
        b"b.jpg,too,many,fields\n"          # unreadable row
        b"c.jpg\n"                          # too few fields
        b"\n"                               # blank line: not a sample
        b"d.jpg,caf\xe9 latin-1 bytes\n"    # not UTF-8
        b",caption without an image\n"      # no image
        b"b.jpg,  spaced   out  \n"
    )
    ann = read_table(path)
    assert _as_dict(ann) == {"a.jpg": ["a good caption"], "b.jpg": ["spaced out"]}
    assert ann.samples == 7
    assert dict(ann.skipped) == {"empty_caption": 1, "unreadable_row": 4}
    assert any("bad.csv:4" in name for name in ann.examples["unreadable_row"])  # names file and line


def test_csv_missing_column_names_the_key(tmp_path):
    path = write_csv(tmp_path / "x.csv", CAPTIONS)
    with pytest.raises(ConfigError, match=r"data\.train\.caption_key='title' is not a column .*\['image', 'caption'\]"):
        read_table(path, caption_key="title", key_prefix="data.train")
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.csv")


def test_karpathy_and_coco_bad_entries(tmp_path):
    kp = tmp_path / "k.json"
    kp.write_text(json.dumps([
        {"image": "a.jpg", "caption": ["one", "", "two"]},
        {"image": "b.jpg"},
        "not an object",
        {"image": "c.jpg", "caption": 5},
        {"image": "d.jpg", "caption": []},
    ]))
    ann = read_karpathy(kp)
    assert _as_dict(ann) == {"a.jpg": ["one", "two"]}
    assert dict(ann.skipped) == {"empty_caption": 2, "unreadable_row": 3}

    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2}],
        "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 9, "caption": "orphan"}, {"image_id": 1, "caption": None}],
    }))
    ann = read_coco(coco)
    assert _as_dict(ann) == {"a.jpg": ["x"]}
    assert dict(ann.skipped) == {"unreadable_row": 3}

    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match="broken.json.*not valid JSON"):
        read_karpathy(tmp_path / "broken.json")
    with pytest.raises(DataError, match="COCO captions file"):
        read_coco(kp)


@pytest.mark.skipif(not FLICKR_MINI.exists(), reason="../shared/data/flickr8k-mini is not present")
def test_real_flickr8k_mini_csv():
    ann = read_table(FLICKR_MINI / "captions.csv")
    assert len(ann.items) == 1000 and ann.samples == 5000 and not ann.skipped
    assert all(len(item.captions) == 5 for item in ann.items)
    assert all((FLICKR_MINI / "images" / item.image).is_file() for item in ann.items)


def test_csv_byte_order_mark_and_separator_names(tmp_path):
    path = tmp_path / "excel.tsv"
    path.write_bytes("\ufeffimage\tcaption\na.jpg\ta caption\n".encode("utf-8"))
    assert _as_dict(read_table(path)) == {"a.jpg": ["a caption"]}
    assert _as_dict(read_table(path, sep="tab")) == {"a.jpg": ["a caption"]}
    assert _as_dict(read_table(path, sep="\\t")) == {"a.jpg": ["a caption"]}  # as typed on a command line
    with pytest.raises(ConfigError, match=r"data.train.sep=';;' must be one character"):
        read_table(path, sep=";;", key_prefix="data.train")
