"""Readers of caption annotation files: every format becomes a list of :class:`ImageCaptions`.

Formats (the ``format`` key of a data source):

- ``karpathy``: the Karpathy-split JSON files of ALBEF/BLIP, a list of ``{"image": relative path,
  "caption": str or list of str}``. Training files have one entry per caption, evaluation files
  one entry per image with its list of captions; both are grouped by image.
- ``coco``: the official COCO captions JSON, ``{"images": [{"id", "file_name"}], "annotations":
  [{"image_id", "caption"}]}``.
- ``csv``: a CSV or TSV table with an image-path column and a caption column (open_clip's
  ``--csv-img-key/--csv-caption-key``), any number of rows per image (Flickr-style
  ``image,caption``); rows of one image are grouped, in order of first appearance.

Rows that cannot be used are counted, not raised: ``unreadable_row`` (not an object, a key or
column missing, not text, not UTF-8, a malformed CSV line) and ``empty_caption``. A file that
cannot be read at all, or that lacks a configured column, is an error naming the file.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from mmresearch.data.skips import DataError, Examples, add_example
from mmresearch.utils.errors import ConfigError

FORMATS = ("karpathy", "coco", "csv")


@dataclass
class ImageCaptions:
    """One image and its captions. ``image`` is the path as written in the annotations (relative
    to the source's ``image_root`` unless absolute)."""

    image: str
    captions: List[str]


@dataclass
class Annotations:
    """The usable images of one annotation file and what was skipped reading it.

    ``samples`` counts every (image, caption) row read, usable or not; ``skipped`` counts the
    rows left out per reason, with up to :data:`~mmresearch.data.skips.EXAMPLES_PER_REASON` example
    names each and the rows each cost.
    """

    source: str
    items: List[ImageCaptions] = field(default_factory=list)
    samples: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: Examples = field(default_factory=dict)
    #: images (as annotated) that lost at least one row, so a split drawn later can refuse to
    #: put a thinned image into an evaluation set
    thinned: set = field(default_factory=set)

    def skip(self, reason: str, name: str, count: int = 1, image: Optional[str] = None) -> None:
        self.skipped[reason] += count
        if image:
            self.thinned.add(image.strip())
        add_example(self.examples, reason, name, count)

    @property
    def num_captions(self) -> int:
        return sum(len(item.captions) for item in self.items)


class _Grouper:
    """Collects (image, caption) rows into :class:`ImageCaptions`, first-appearance order."""

    def __init__(self, annotations: Annotations) -> None:
        self.ann = annotations
        self.index: Dict[str, int] = {}

    def add(self, image: Any, caption: Any, name: str) -> None:
        self.ann.samples += 1
        known = image if isinstance(image, str) and not _has_surrogates(image) else None
        if not isinstance(image, str) or not image.strip() or not isinstance(caption, str):
            self.ann.skip("unreadable_row", f"{name} (image {image!r}, caption {caption!r})"[:200], image=known)
            return
        if _has_surrogates(image) or _has_surrogates(caption):
            self.ann.skip("unreadable_row", f"{name} (not UTF-8)", image=known)
            return
        caption = " ".join(caption.split())
        if not caption:
            self.ann.skip("empty_caption", f"{name} ({image})", image=image)
            return
        image = image.strip()
        if image not in self.index:
            self.index[image] = len(self.ann.items)
            self.ann.items.append(ImageCaptions(image, []))
        self.ann.items[self.index[image]].captions.append(caption)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise DataError(f"annotation file {str(path)!r} does not exist") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"annotation file {str(path)!r} is not valid JSON: {err}") from err


def read_karpathy(path: str | Path) -> Annotations:
    """A Karpathy-split JSON list (see the module docstring)."""
    path = Path(path)
    data = _load_json(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list) and "images" not in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise DataError(f"{str(path)!r}: a Karpathy-split file is a JSON list of {{'image', 'caption'}} entries, got {type(data).__name__}")
    ann = Annotations(str(path))
    group = _Grouper(ann)
    for i, entry in enumerate(data):
        name = f"{path.name}[{i}]"
        if not isinstance(entry, dict) or "image" not in entry or "caption" not in entry:
            ann.samples += 1
            ann.skip("unreadable_row", f"{name} (needs 'image' and 'caption')")
            continue
        captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        if not captions:
            ann.samples += 1
            image = entry["image"] if isinstance(entry["image"], str) else None
            ann.skip("empty_caption", f"{name} ({entry['image']}: empty caption list)", image=image)
        for j, caption in enumerate(captions):
            group.add(entry["image"], caption, name if len(captions) == 1 else f"{name}.caption[{j}]")
    return ann


def read_coco(path: str | Path) -> Annotations:
    """The official COCO captions JSON (``captions_train2017.json``)."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{str(path)!r}: a COCO captions file is a JSON object with 'images' and 'annotations' lists")
    ann = Annotations(str(path))
    files: Dict[Any, str] = {}
    for i, image in enumerate(data["images"]):
        if isinstance(image, dict) and "id" in image and isinstance(image.get("file_name"), str):
            files[image["id"]] = image["file_name"]
        else:
            ann.skip("unreadable_row", f"{path.name}:images[{i}] (needs 'id' and 'file_name')")
    by_image: Dict[Any, List[tuple]] = {}
    for i, entry in enumerate(data["annotations"]):
        name = f"{path.name}:annotations[{i}]"
        if not isinstance(entry, dict) or entry.get("image_id") not in files:
            ann.samples += 1
            why = "needs 'image_id' and 'caption'" if not isinstance(entry, dict) else f"image_id {entry.get('image_id')!r} not in 'images'"
            ann.skip("unreadable_row", f"{name} ({why})")
            continue
        by_image.setdefault(entry["image_id"], []).append((entry.get("caption"), name))
    group = _Grouper(ann)
    for image_id, file_name in files.items():  # the order of the 'images' list
        for caption, name in by_image.get(image_id, []):
            group.add(file_name, caption, name)
    return ann


def read_table(path: str | Path, image_key: str = "image", caption_key: str = "caption", sep: Optional[str] = None,
               key_prefix: str = "data") -> Annotations:
    """A CSV/TSV table with a header row; ``sep`` defaults to a tab for ``.tsv`` files, else a comma."""
    path = Path(path)
    if sep is None:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
    sep = {"tab": "\t", "\\t": "\t", "comma": ","}.get(sep, sep)
    if not isinstance(sep, str) or len(sep) != 1:
        raise ConfigError(f"{key_prefix}.sep={sep!r} must be one character (or 'tab')")
    try:
        # utf-8-sig: a byte-order mark (tables saved by Excel) is not part of the first column's name
        f = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except FileNotFoundError as err:
        raise DataError(f"annotation file {str(path)!r} does not exist") from err
    ann = Annotations(str(path))
    group = _Grouper(ann)
    with f:
        # strict: a stray quote is a malformed row, not the start of a field that swallows lines
        reader = csv.reader(f, delimiter=sep, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"annotation file {str(path)!r} is empty (expected a header row)") from None
        header = [h.strip() for h in header]
        for key, column in (("image_key", image_key), ("caption_key", caption_key)):
            if column not in header:
                raise ConfigError(
                    f"{key_prefix}.{key}={column!r} is not a column of {str(path)!r} (separator {sep!r}); its header is {header}"
                )
        image_col, caption_col = header.index(image_key), header.index(caption_key)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                ann.samples += 1
                ann.skip("unreadable_row", f"{path.name}:{reader.line_num} ({err})")
                continue
            if not row or all(not cell.strip() for cell in row):
                continue  # blank line
            name = f"{path.name}:{reader.line_num}"
            if len(row) != len(header):
                ann.samples += 1
                ann.skip("unreadable_row", f"{name} ({len(row)} fields, header has {len(header)})")
                continue
            group.add(row[image_col], row[caption_col], name)
    return ann


READERS: Dict[str, Callable[..., Annotations]] = {"karpathy": read_karpathy, "coco": read_coco, "csv": read_table}
