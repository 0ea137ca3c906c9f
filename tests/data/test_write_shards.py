"""``mmr-write-shards`` (:mod:`mmresearch.data.write_shards`): WebDataset shards from csv, karpathy
and coco annotations; the image files' own bytes, captions in ``.json``, bad images skipped and
counted in ``manifest.json``."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from real_fixtures import captions_for, write_coco, write_corrupt, write_csv, write_images, write_karpathy

from mmresearch.data.formats import READERS, ImageCaptions
from mmresearch.data.webdataset import expand_urls
from mmresearch.data.write_shards import main, write_shards

N = 10  # good images of the fixture (plus a corrupt and a missing one)


def read_shard(path: Path) -> List[Tuple[str, Dict[str, bytes]]]:
    """The samples of a tar shard in order: ``(key, {extension: bytes})``."""
    samples: Dict[str, Dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            assert ext not in samples.setdefault(key, {}), f"{member.name} twice in {path}"
            samples[key][ext] = tar.extractfile(member).read()
    return list(samples.items())


def written_images(output: Path, manifest: dict) -> List[str]:
    """The annotated image paths of all samples, in shard order."""
    return [json.loads(s["json"])["image"] for name in manifest["shards"] for _, s in read_shard(output / name)]


@pytest.fixture
def source(tmp_path):
    """N JPEGs under ``images/`` plus a corrupt one and a missing one in the middle of the annotations."""
    root = tmp_path / "images"
    names = write_images(root, N, size=16)
    corrupt = write_corrupt(root, "corrupt.jpg", truncated_from=root / names[0])
    captions = captions_for(names[:4] + [corrupt, "missing.jpg"] + names[4:], per_image=2)
    return root, names, captions


def annotation_file(fmt: str, directory: Path, captions: Dict[str, List[str]]) -> Path:
    writers = {"csv": (write_csv, "captions.csv"), "karpathy": (write_karpathy, "train.json"), "coco": (write_coco, "captions.json")}
    write, name = writers[fmt]
    return write(directory / name, captions)


@pytest.mark.parametrize("fmt", ["csv", "karpathy", "coco"])
def test_write_shards_from_each_format(tmp_path, source, fmt):
    root, names, captions = source
    ann = READERS[fmt](annotation_file(fmt, tmp_path, captions))
    assert len(ann.items) == N + 2
    out = tmp_path / "shards"
    manifest = write_shards(ann.items, str(root), out, samples_per_shard=3)

    n_shards = math.ceil(N / 3)
    assert manifest["shards"] == [f"shard-{i:06d}.tar" for i in range(n_shards)]
    assert sorted(p.name for p in out.glob("*.tar")) == manifest["shards"]
    assert manifest["urls"] == str(out / f"shard-{{000000..{n_shards - 1:06d}}}.tar")
    assert expand_urls(manifest["urls"]) == [str(out / s) for s in manifest["shards"]]
    assert manifest["num_samples"] == N
    assert manifest["skipped"] == {"corrupt_image": 1, "missing_image": 1}
    assert manifest["skipped_examples"] == {"corrupt_image": [str(root / "corrupt.jpg")], "missing_image": [str(root / "missing.jpg")]}
    assert json.loads((out / "manifest.json").read_text()) == manifest

    per_shard = [read_shard(out / name) for name in manifest["shards"]]
    assert [len(s) for s in per_shard] == [3, 3, 3, 1]
    keys = [key for shard in per_shard for key, _ in shard]
    assert len(set(keys)) == N
    for shard in per_shard:
        for key, sample in shard:
            assert set(sample) == {"jpg", "json"}, key
            meta = json.loads(sample["json"])
            assert meta["image"] in names  # never the corrupt or the missing one
            assert sample["jpg"] == (root / meta["image"]).read_bytes()  # the file's own bytes, not re-encoded
            assert meta["captions"] == captions[meta["image"]]
    assert written_images(out, manifest) == names  # unshuffled: annotation order


def test_write_shards_keeps_png_bytes_and_extension(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(root / "green.png")
    manifest = write_shards([ImageCaptions("green.png", ["a green square"])], str(root), tmp_path / "out")
    [(key, sample)] = read_shard(tmp_path / "out" / manifest["shards"][0])
    assert set(sample) == {"png", "json"}
    assert sample["png"] == (root / "green.png").read_bytes()


def test_shuffle_is_seeded_and_the_cli_reports(tmp_path, source, capsys):
    root, names, captions = source
    ann_path = annotation_file("csv", tmp_path, captions)

    def cli(out: str, *extra: str) -> Tuple[dict, str]:
        argv = ["--format", "csv", "--annotations", str(ann_path), "--image-root", str(root), "--output", str(tmp_path / out),
                "--samples-per-shard", "4", *extra]
        assert main(argv) == 0
        return json.loads((tmp_path / out / "manifest.json").read_text()), capsys.readouterr().out

    plain, _ = cli("plain")
    first, printed = cli("first", "--shuffle", "--seed", "1")
    again, _ = cli("again", "--shuffle", "--seed", "1")
    other, _ = cli("other", "--shuffle", "--seed", "2")
    order = {name: written_images(tmp_path / name, m) for name, m in
             (("plain", plain), ("first", first), ("again", again), ("other", other))}
    assert order["plain"] == names
    assert order["first"] == order["again"]  # same seed: same order
    assert order["first"] != names and order["other"] != order["first"]
    assert all(sorted(o) == sorted(names) for o in order.values())
    assert printed.startswith(f"wrote {N} samples in 3 shards to {tmp_path / 'first'}")
    assert first["urls"] in printed
    assert "skipped images: missing_image=1, corrupt_image=1" in printed
    assert "skipped rows: none" in printed


def test_cli_default_image_root_and_skipped_rows(tmp_path, capsys):
    names = write_images(tmp_path / "images", 3, size=16)
    captions = captions_for([f"images/{n}" for n in names], per_image=1)
    ann_path = write_csv(tmp_path / "captions.csv", captions)
    with open(ann_path, "a", encoding="utf-8") as f:
        f.write('images/img000.jpg,"   "\n')  # an empty caption row
    assert main(["--format", "csv", "--annotations", str(ann_path), "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("wrote 3 samples in 1 shards")
    assert "skipped images: none" in printed and "skipped rows: empty_caption=1" in printed
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert written_images(tmp_path / "out", manifest) == [f"images/{n}" for n in names]


def test_no_verify_writes_undecoded_files_but_skips_missing_ones(tmp_path, source):
    root, names, captions = source
    items = [ImageCaptions(image, caps) for image, caps in captions.items()]
    manifest = write_shards(items, str(root), tmp_path / "out", samples_per_shard=100, verify=False)
    assert manifest["num_samples"] == N + 1  # the corrupt file is not decoded, so it is written
    assert manifest["skipped"] == {"missing_image": 1}
    assert "missing.jpg" not in written_images(tmp_path / "out", manifest)


def test_rewriting_a_directory_lists_only_the_new_shards(tmp_path, source):
    root, names, _ = source
    items = [ImageCaptions(n, [f"caption of {n}"]) for n in names]
    out = tmp_path / "out"
    assert len(write_shards(items, str(root), out, samples_per_shard=2)["shards"]) == 5
    manifest = write_shards(items[:3], str(root), out, samples_per_shard=2)  # stale shards 2..4 stay on disk
    assert manifest["shards"] == ["shard-000000.tar", "shard-000001.tar"]
    assert manifest["urls"] == str(out / "shard-{000000..000001}.tar")
    assert written_images(out, manifest) == names[:3]


def test_nothing_to_write_leaves_no_empty_shard(tmp_path):
    manifest = write_shards([ImageCaptions("missing.jpg", ["x"])], str(tmp_path), tmp_path / "out")
    assert manifest["shards"] == [] and manifest["urls"] is None and manifest["num_samples"] == 0
    assert manifest["skipped"] == {"missing_image": 1}
    assert not list((tmp_path / "out").glob("*.tar"))


def test_samples_per_shard_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="samples-per-shard"):
        write_shards([], None, tmp_path / "out", samples_per_shard=0)
