"""WebDataset training pairs (:mod:`mmresearch.data.webdataset`): shards split over ranks and
workers without overlap, exact epoch lengths, epoch reshuffling, bad samples as skip markers, stable
ids. Two ranks are simulated by patching ``world_info`` in the module (forked DataLoader workers
inherit the patch)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest
from PIL import Image
from real_fixtures import FLICKR_MINI, captions_for, tiny_tokenizer, write_corrupt, write_images

from mmresearch.data.collate import TrainCollate
from mmresearch.data.formats import ImageCaptions, read_table
from mmresearch.data.skips import DataError, Skipped
from mmresearch.data.webdataset import WebDatasetPairs, expand_urls, stable_id, webdataset_loader
from mmresearch.data.write_shards import write_shards

WORLD_INFO = "mmresearch.data.webdataset.world_info"
N = 64  # samples of the clean fixture: 8 shards of 8
PER_SHARD = 8
BATCH = 4


# ------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def transform():
    from mmresearch.data.transforms import build_transforms, resolve_image_config

    return build_transforms(resolve_image_config(image_size=32))[0]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """N images, one caption each (``picture imgNNN.jpg caption 0``), in 8 shards of 8."""
    tmp = tmp_path_factory.mktemp("clean")
    names = write_images(tmp / "images", N, size=16)
    items = [_caption_item(name) for name in names]
    manifest = write_shards(items, str(tmp / "images"), tmp / "shards", samples_per_shard=PER_SHARD)
    assert len(manifest["shards"]) == N // PER_SHARD and manifest["num_samples"] == N
    return manifest["urls"], names


@pytest.fixture(scope="module")
def id_names(clean, transform) -> Dict[int, str]:
    """image_id -> image name, from one single-rank pass over all samples."""
    urls, names = clean
    ds = WebDatasetPairs(urls, N, transform, shuffle_buffer=0)
    items = list(ds)
    assert all(isinstance(item, dict) for item in items)
    mapping = {item["image_id"]: name_of(item) for item in items}
    assert sorted(mapping.values()) == names  # every sample once, N distinct ids
    return mapping


def _caption_item(name: str) -> ImageCaptions:
    return ImageCaptions(name, captions_for([name], per_image=1)[name])


def name_of(item: dict) -> str:
    """The image name in a clean-fixture caption (``picture <name> caption 0``)."""
    return item["caption"].split()[1]


def as_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(WORLD_INFO, lambda: (rank, world))


def collate_for(tokenizer) -> TrainCollate:
    return TrainCollate(tokenizer, report_skips=True, normalize=False, with_negatives=False, with_questions=False)


def jpeg_bytes(color=(200, 30, 30), size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="JPEG")
    return buf.getvalue()


def write_tar(path: Path, members: Sequence[Tuple[str, bytes]]) -> str:
    """A tar shard of ``(file name, bytes)`` members in this order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def first_error(loader) -> Exception:
    """The error of the first batch, with the loader's workers shut down here: a traceback kept
    alive (``pytest.raises``) would leave the iterator to the cyclic GC, whose shutdown of its
    workers waits for their join timeouts (seconds) in some later test."""
    it = iter(loader)
    try:
        next(it)
    except Exception as err:  # noqa: BLE001 - returned for the caller to check
        err.__traceback__ = None
        error = err
    else:
        raise AssertionError("the loader yielded a batch")
    del it  # shuts the workers down now
    return error

def check_disjoint_cover(per_rank: List[List[str]], names: List[str]) -> None:
    """Every sample seen exactly once over the ranks in one epoch."""
    seen = [n for rank in per_rank for n in rank]
    assert sorted(seen) == sorted(names), "a sample seen twice or never within an epoch"


# ------------------------------------------------------------------------------------------------
# urls and construction


def test_expand_urls_patterns_lists_and_lists_of_patterns():
    assert expand_urls("d/shard-{000..002}.tar") == ["d/shard-000.tar", "d/shard-001.tar", "d/shard-002.tar"]
    assert expand_urls("a.tar::b/{0..1}.tar") == ["a.tar", "b/0.tar", "b/1.tar"]
    assert expand_urls(["a.tar", "b/{1..2}.tar", "c.tar::d.tar"]) == ["a.tar", "b/1.tar", "b/2.tar", "c.tar", "d.tar"]
    assert expand_urls(("x.tar",)) == ["x.tar"]


def test_constructor_rejects_missing_shards_and_bad_num_samples(tmp_path, clean, transform):
    urls, _ = clean
    with pytest.raises(DataError, match="no WebDataset shards"):
        WebDatasetPairs([], 10, transform)
    with pytest.raises(DataError, match="1 of 2 WebDataset shards do not exist"):
        WebDatasetPairs([expand_urls(urls)[0], str(tmp_path / "nope.tar")], 10, transform)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        WebDatasetPairs(urls, 0, transform)


# ------------------------------------------------------------------------------------------------
# Splitting over ranks and workers, epoch length


def test_two_ranks_in_process_cover_the_data_once_per_epoch(monkeypatch, clean, transform):
    urls, names = clean
    ds = WebDatasetPairs(urls, N, transform, shuffle_buffer=16, seed=0, batch_size=BATCH)
    epochs = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        per_rank = []
        for rank in (0, 1):
            as_rank(monkeypatch, rank, 2)
            items = list(ds)
            assert all(isinstance(item, dict) for item in items)
            assert len(items) == len(ds) == N // 2  # both ranks: the same whole number of batches
            assert ds.batches_per_rank(2) == N // 2 // BATCH
            assert items[0]["image"].shape == (3, 32, 32)
            per_rank.append([name_of(item) for item in items])
        check_disjoint_cover(per_rank, names)
        epochs.append(per_rank)
    assert epochs[0] != epochs[1]  # another epoch: another order (shards and buffer reshuffled)
    # the same epoch again: the same stream
    ds.set_epoch(0)
    as_rank(monkeypatch, 0, 2)
    assert [name_of(item) for item in ds] == epochs[0][0]


def test_two_ranks_two_workers_through_the_loader(monkeypatch, clean, id_names, transform, tokenizer):
    from lightning.fabric.utilities.data import _set_sampler_epoch

    urls, names = clean
    ds = WebDatasetPairs(urls, N, transform, shuffle_buffer=8, seed=3, batch_size=BATCH)
    loader = webdataset_loader(ds, collate_for(tokenizer), num_workers=2, pin_memory=False)
    epochs = []
    for epoch in (0, 1):
        _set_sampler_epoch(loader, epoch)  # what Lightning's fit loop calls at each epoch start
        assert int(ds._epoch) == epoch
        per_rank, lengths = [], []
        for rank in (0, 1):
            as_rank(monkeypatch, rank, 2)
            batches = list(loader)
            assert len(batches) == len(loader) == N // 2 // BATCH
            lengths.append(len(batches))
            for batch in batches:
                assert batch.images.shape == (BATCH, 3, 32, 32) and batch.input_ids.shape[0] == BATCH
                assert batch.skipped == {}
                assert batch.text_image_ids.tolist() == batch.image_ids.tolist()
            per_rank.append([id_names[i] for batch in batches for i in batch.image_ids.tolist()])
        assert lengths[0] == lengths[1]
        check_disjoint_cover(per_rank, names)
        epochs.append(per_rank)
    assert epochs[0] != epochs[1]


def test_fewer_shards_than_ranks_times_workers_is_an_error(monkeypatch, clean, transform, tokenizer):
    shards = expand_urls(clean[0])
    as_rank(monkeypatch, 0, 2)
    with pytest.raises(DataError, match=r"1 WebDataset shards cannot be split over 2 ranks x 1 workers .*write more shards"):
        list(WebDatasetPairs(shards[:1], 8, transform, batch_size=2))
    ds = WebDatasetPairs(shards[:3], 24, transform, batch_size=2)
    loader = webdataset_loader(ds, collate_for(tokenizer), num_workers=2, pin_memory=False)
    error = first_error(loader)
    assert isinstance(error, DataError)
    assert re.search(r"3 WebDataset shards cannot be split over 2 ranks x 2 workers .*lower data.num_workers", str(error))



def test_num_samples_larger_than_the_data_repeats_with_a_warning(monkeypatch, caplog, clean, transform):
    urls, names = clean
    ds = WebDatasetPairs(urls, 100, transform, shuffle_buffer=0, batch_size=BATCH)
    quota = 100 // 2 // BATCH * BATCH  # 48 per rank, each rank holds 32 samples
    distinct = []
    for rank in (0, 1):
        as_rank(monkeypatch, rank, 2)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mmresearch.data.webdataset"):
            items = list(ds)
        assert len(items) == len(ds) == quota
        seen = [name_of(item) for item in items]
        assert len(set(seen)) == N // 2 and max(Counter(seen).values()) == 2
        assert any("samples repeat within the epoch" in r.getMessage() for r in caplog.records)
        distinct.append(sorted(set(seen)))
    check_disjoint_cover(distinct, names)  # the repeats stay within a rank's own shards


def test_num_samples_smaller_than_the_data_gives_whole_batches(monkeypatch, caplog, clean, transform, tokenizer):
    urls, _ = clean
    ds = WebDatasetPairs(urls, 30, transform, shuffle_buffer=4, batch_size=BATCH)
    per_rank = 30 // 2 // BATCH * BATCH  # 12: 3 batches per rank
    seen = []
    for rank in (0, 1):
        as_rank(monkeypatch, rank, 2)
        with caplog.at_level(logging.WARNING, logger="mmresearch.data.webdataset"):
            items = list(ds)
        assert len(items) == len(ds) == per_rank
        seen.extend(name_of(item) for item in items)
    assert len(set(seen)) == len(seen) == 2 * per_rank  # nothing repeated, nothing shared by the ranks
    assert not caplog.records
    # split over 2 workers (2 + 1 batches): still exactly 3 batches
    as_rank(monkeypatch, 1, 2)
    loader = webdataset_loader(ds, collate_for(tokenizer), num_workers=2, pin_memory=False)
    batches = list(loader)
    assert len(batches) == len(loader) == per_rank // BATCH
    assert all(b.images.shape[0] == BATCH for b in batches)


# ------------------------------------------------------------------------------------------------
# Bad samples


@pytest.fixture
def bad_shards(tmp_path) -> Tuple[List[str], Dict[str, str]]:
    """A shard with one sample of every kind of problem (and three good ones), plus a garbage
    file named ``.tar``; and the expected skip reason per sample name."""
    images = tmp_path / "images"
    write_images(images, 1, size=16)
    corrupt = (images / write_corrupt(images, "c.jpg", truncated_from=images / "img000.jpg")).read_bytes()
    png = io.BytesIO()
    Image.new("RGB", (12, 12), (0, 0, 255)).save(png, format="PNG")
    bad = write_tar(tmp_path / "bad.tar", [
        ("good.jpg", jpeg_bytes()), ("good.txt", b"a red  square\n"),
        ("corrupt.jpg", corrupt), ("corrupt.txt", b"a broken picture"),
        ("blank.jpg", jpeg_bytes()), ("blank.txt", b"  \n\t "),
        ("nocap.jpg", jpeg_bytes()),
        ("onlycap.txt", b"a caption without an image"),
        ("badjson.jpg", jpeg_bytes()), ("badjson.json", b'{"caption": "unterminated'),
        ("nokey.jpg", jpeg_bytes()), ("nokey.json", json.dumps({"text": "no caption key"}).encode()),
        ("listjson.jpg", jpeg_bytes((0, 255, 0))), ("listjson.json", json.dumps({"captions": ["first one", "second one"]}).encode()),
        ("pngjson.png", png.getvalue()), ("pngjson.json", json.dumps({"caption": "a blue square"}).encode()),
    ])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file " * 40)
    expected = {
        "bad.tar:corrupt": "corrupt_image",
        "bad.tar:blank": "empty_caption",
        "bad.tar:nocap": "unreadable_row",
        "bad.tar:onlycap": "missing_image",
        "bad.tar:badjson": "unreadable_row",
        "bad.tar:nokey": "unreadable_row",
        "garbage.tar": "unreadable_row",
    }
    return [bad, str(garbage)], expected


GOOD_CAPTIONS = {"a red square", "first one", "second one", "a blue square"}


def test_bad_samples_become_skip_markers_with_their_reason(bad_shards, transform):
    shards, expected = bad_shards
    # 9 samples + 1 garbage shard; a shard is expected to hold 18 / 2 = 9 samples, so the
    # garbage shard counts as 9 lost samples (not 1) and the epoch is not filled with repeats
    ds = WebDatasetPairs(shards, 18, transform, shuffle_buffer=0, batch_size=18)
    items = list(ds)
    assert len(items) == 18
    skipped = [item for item in items if isinstance(item, Skipped)]
    assert {s.name: s.reason for s in skipped} == expected
    assert len(skipped) == len(expected) - 1 + 9 and sum(s.name == "garbage.tar" for s in skipped) == 9
    good = [item for item in items if not isinstance(item, Skipped)]
    assert len(good) == 3
    assert {item["caption"] for item in good} <= GOOD_CAPTIONS
    assert "a red square" in {item["caption"] for item in good}  # whitespace normalised
    assert all(item["image"].shape == (3, 32, 32) for item in good)
    details = {s.name: s.detail for s in skipped}
    assert "JSONDecodeError" in details["bad.tar:badjson"]
    assert "no .txt or .json caption member" in details["bad.tar:nocap"]


def test_collate_leaves_skipped_samples_out_and_counts_them(bad_shards, transform, tokenizer):
    shards, expected = bad_shards
    want = Counter(expected.values())
    want["unreadable_row"] += 8  # the garbage shard: 9 expected samples lost
    ds = WebDatasetPairs(shards, 18, transform, shuffle_buffer=0, batch_size=18)
    collate = collate_for(tokenizer)
    batch = collate(list(ds))
    assert batch.images.shape == (3, 3, 32, 32) and batch.input_ids.shape[0] == 3
    assert {reason: len(names) for reason, names in batch.skipped.items()} == want
    assert any(name.startswith("bad.tar:corrupt") for name in batch.skipped["corrupt_image"])
    # the same through the loader (one batch of 18 per epoch)
    loader = webdataset_loader(ds, collate, num_workers=0, pin_memory=False)
    [batch] = list(loader)
    assert batch.images.shape[0] == 3
    assert {reason: len(names) for reason, names in batch.skipped.items()} == want


def test_unreadable_and_truncated_shards_do_not_crash(tmp_path, clean, transform, caplog):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(3000))
    items = list(WebDatasetPairs(str(garbage), 2, transform, shuffle_buffer=0))
    assert [(s.reason, s.name) for s in items] == [("unreadable_row", "garbage.tar")] * 2
    # a shard cut in the middle of its 5th image: 4 good samples, then a marker
    shard = Path(expand_urls(clean[0])[0])
    with tarfile.open(shard) as tar:
        fifth_image = [m for m in tar.getmembers() if m.name.endswith(".jpg")][4]
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(shard.read_bytes()[: fifth_image.offset_data + 100])
    items = list(WebDatasetPairs(str(truncated), 5, transform, shuffle_buffer=0))
    assert all(isinstance(item, dict) for item in items[:4])
    assert isinstance(items[4], Skipped) and items[4].reason == "unreadable_row" and items[4].name == "truncated.tar"


# ------------------------------------------------------------------------------------------------
# Stable ids


IDS_SCRIPT = """
import json, sys
from mmresearch.data.webdataset import WebDatasetPairs
ds = WebDatasetPairs(sys.argv[1], int(sys.argv[2]), lambda image: 0, shuffle_buffer=0)
print(json.dumps({item["caption"]: [item["image_id"], item["text_id"]] for item in ds}))
"""


def test_ids_are_stable_across_datasets_seeds_and_processes(clean, transform):
    urls, names = clean

    def ids(ds) -> Dict[str, Tuple[int, int]]:
        return {item["caption"]: (item["image_id"], item["text_id"]) for item in ds}

    first = ids(WebDatasetPairs(urls, N, transform, shuffle_buffer=0, seed=0))
    other = WebDatasetPairs(urls, N, transform, shuffle_buffer=32, seed=7)
    other.set_epoch(3)
    assert ids(other) == first
    assert len({image_id for image_id, _ in first.values()}) == N
    env = dict(os.environ, PYTHONHASHSEED="123", OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", IDS_SCRIPT, urls, str(N)], capture_output=True, text=True, env=env, cwd=root,
                         timeout=120, check=True).stdout
    assert {k: tuple(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()} == first


def test_shards_with_the_same_file_name_in_two_directories_get_distinct_ids(tmp_path, transform):
    shards = []
    for d, color in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (tmp_path / d).mkdir()
        shards.append(write_tar(tmp_path / d / "shard-000000.tar", [("000000000.jpg", jpeg_bytes(color)), ("000000000.txt", d.encode())]))
    items = list(WebDatasetPairs("::".join(shards), 2, transform, shuffle_buffer=0))
    assert sorted(item["caption"] for item in items) == ["a", "b"]
    assert items[0]["image_id"] != items[1]["image_id"]


def test_json_caption_lists_give_one_of_the_captions(tmp_path, transform):
    captions = ["a dog on grass", "a brown dog", "the dog runs"]
    shard = write_tar(tmp_path / "list.tar", [("k0.jpg", jpeg_bytes()), ("k0.json", json.dumps({"captions": captions}).encode()),
                                              ("k1.jpg", jpeg_bytes()), ("k1.json", json.dumps({"caption": captions[:1]}).encode())])
    ds = WebDatasetPairs(shard, 2, transform, shuffle_buffer=0)
    chosen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        k0, k1 = list(ds)
        assert k0["image_id"] == stable_id(shard, "k0") and k1["image_id"] == stable_id(shard, "k1")
        assert k0["caption"] in captions and k1["caption"] == captions[0]
        assert k0["text_id"] == stable_id(shard, "k0", str(captions.index(k0["caption"])))
        chosen.add(k0["caption"])
    assert len(chosen) > 1  # the choice varies with the epoch


# ------------------------------------------------------------------------------------------------
# Real data


@pytest.mark.skipif(not (FLICKR_MINI / "captions.csv").is_file(), reason=f"{FLICKR_MINI} not available")
def test_flickr_mini_round_trip(tmp_path, transform):
    ann = read_table(FLICKR_MINI / "captions.csv")
    items = ann.items[:60]
    root = FLICKR_MINI / "images"
    manifest = write_shards(items, str(root), tmp_path / "shards", samples_per_shard=25)
    assert manifest["num_samples"] == 60 and len(manifest["shards"]) == 3 and manifest["skipped"] == {}
    by_image = {item.image: item.captions for item in items}
    expected = {}
    for shard in expand_urls(manifest["urls"]):
        jpegs, images = {}, {}
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                data = tar.extractfile(member).read()
                if ext == "json":
                    meta = json.loads(data)
                    assert meta["captions"] == by_image[meta["image"]]
                    expected[stable_id(shard, key)] = meta["captions"]
                    images[key] = meta["image"]
                else:
                    assert ext == "jpg"
                    jpegs[key] = data
        assert set(jpegs) == set(images)
        assert all(jpegs[key] == (root / images[key]).read_bytes() for key in jpegs)  # not re-encoded
    assert len(expected) == 60
    got = list(WebDatasetPairs(manifest["urls"], 60, transform, shuffle_buffer=10))
    assert all(isinstance(item, dict) for item in got)
    assert len({item["image_id"] for item in got}) == 60
    assert set(expected) == {item["image_id"] for item in got}
    for item in got:
        assert item["caption"] in expected[item["image_id"]]
        assert item["image"].shape == (3, 32, 32)
