"""``mmr-write-shards``: write WebDataset tar shards from any annotation format.

Usage::

    mmr-write-shards --format csv --annotations captions.csv --image-root images/ \\
        --output shards/ --samples-per-shard 1000 --shuffle --seed 0
    mmr-train data=webdataset data.train.urls='shards/shard-{000000..000004}.tar' \\
        data.train.num_samples=<num_samples from shards/manifest.json> ...

One sample per image: the image file's own bytes (not re-encoded, extension kept) under its
extension, and ``.json`` ``{"captions": [...], "image": <path as annotated>}``. Images that are
missing or cannot be decoded are skipped and counted like in training. ``manifest.json`` in the
output directory records the shard names, the sample count (``data.train.num_samples``) and the
skipped samples per reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from mmresearch.data.captioned_images import image_path, read_rgb
from mmresearch.data.formats import FORMATS, READERS, ImageCaptions
from mmresearch.data.skips import Skipped, format_counts

IMAGE_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def write_shards(
    items: Sequence[ImageCaptions],
    image_root: Optional[str],
    output: str | Path,
    samples_per_shard: int = 1000,
    shuffle: bool = False,
    seed: int = 0,
    verify: bool = True,
    prefix: str = "shard",
) -> dict:
    """Write ``items`` as shards ``<output>/<prefix>-NNNNNN.tar``; returns the manifest."""
    import webdataset as wds

    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(items)) if shuffle else np.arange(len(items))
    skipped: Counter = Counter()
    examples: dict = {}
    written = 0
    pattern = str(output / f"{prefix}-%06d.tar")
    written_files: List[str] = []  # the shards of this run (not stale ones of an earlier run in ``output``)
    with wds.ShardWriter(pattern, maxcount=samples_per_shard, verbose=0, post=written_files.append) as sink:
        for i in order:
            item = items[int(i)]
            path = image_path(image_root, item.image)
            ext = IMAGE_SUFFIXES.get(Path(path).suffix.lower())
            if verify or ext is None:
                problem = read_rgb(path)
            else:  # not decoded, but a missing file is still skipped, not a crash
                problem = None if os.path.isfile(path) else Skipped("missing_image", path)
            if isinstance(problem, Skipped):
                skipped[problem.reason] += 1
                examples.setdefault(problem.reason, []).append(path)
                continue
            if ext is None:  # decodable but an unusual suffix: store as-is under a generic key
                ext = "jpg"
            with open(path, "rb") as f:
                data = f.read()
            sink.write({"__key__": f"{written:09d}", ext: data, "json": {"captions": list(item.captions), "image": item.image}})
            written += 1
    if not written:  # the writer opens its first shard up front: no empty shard when nothing was written
        for name in written_files:
            Path(name).unlink(missing_ok=True)
        written_files = []
    shards = [Path(name).name for name in written_files]
    manifest = {
        "shards": shards,
        "urls": str(output / f"{prefix}-{{{0:06d}..{len(shards) - 1:06d}}}.tar") if shards else None,
        "num_samples": written,
        "skipped": dict(skipped),
        "skipped_examples": {k: v[:5] for k, v in examples.items()},
    }
    (output / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mmr-write-shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS, help="annotation format")
    parser.add_argument("--annotations", required=True, help="annotation file (JSON, CSV or TSV)")
    parser.add_argument("--image-root", default=None, help="directory image paths are relative to (default: the file's)")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--shuffle", action="store_true", help="shuffle images before writing (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-verify", action="store_true", help="do not decode images before writing them")
    parser.add_argument("--image-key", default="image", help="csv: image path column")
    parser.add_argument("--caption-key", default="caption", help="csv: caption column")
    parser.add_argument("--sep", default=None, help="csv: separator (default: tab for .tsv, else comma)")
    parser.add_argument("--prefix", default="shard", help="shard file name prefix")
    args = parser.parse_args(argv)
    options = {"image_key": args.image_key, "caption_key": args.caption_key, "sep": args.sep} if args.format == "csv" else {}
    ann = READERS[args.format](args.annotations, **options)
    root = args.image_root if args.image_root is not None else os.path.dirname(os.path.abspath(args.annotations))
    manifest = write_shards(ann.items, root, args.output, args.samples_per_shard, args.shuffle, args.seed, not args.no_verify, args.prefix)
    print(
        f"wrote {manifest['num_samples']} samples in {len(manifest['shards'])} shards to {args.output} ({manifest['urls']}); "
        f"skipped images: {format_counts(manifest['skipped'])}; skipped rows: {format_counts(ann.skipped)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
