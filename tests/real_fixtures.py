"""Small real-data fixtures written by the tests: JPEG files, broken files and annotation files
in every supported format (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

FLICKR_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k-mini"


def write_images(root: Path, n: int, size: int | tuple = 40, seed: int = 0) -> List[str]:
    """``n`` JPEG files ``img<i>.jpg`` of distinct random colours (``size``: a side, or ``(width,
    height)``); returns their names."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = (size, size) if isinstance(size, int) else size
    names = []
    for i in range(n):
        pixels = (rng.integers(0, 256, size=(1, 1, 3)) + rng.integers(-20, 20, size=(height, width, 3))).clip(0, 255).astype(np.uint8)
        name = f"img{i:03d}.jpg"
        Image.fromarray(pixels).save(root / name, quality=90)
        names.append(name)
    return names


def write_corrupt(root: Path, name: str = "corrupt.jpg", truncated_from: Path | None = None) -> str:
    """A file that is not a decodable image: the first bytes of a real JPEG (truncated) or text."""
    path = root / name
    if truncated_from is not None:
        path.write_bytes(truncated_from.read_bytes()[:200])
    else:
        path.write_bytes(b"this is not an image")
    return name


def captions_for(names: List[str], per_image: int = 3) -> Dict[str, List[str]]:
    return {name: [f"picture {name} caption {j}" for j in range(per_image)] for name in names}


def write_csv(path: Path, captions: Dict[str, List[str]], image_key: str = "image", caption_key: str = "caption", sep: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=sep)
        writer.writerow([image_key, caption_key])
        for name, caps in captions.items():
            for caption in caps:
                writer.writerow([name, caption])
    return path


def write_karpathy(path: Path, captions: Dict[str, List[str]], per_caption: bool = True) -> Path:
    """Training style (one entry per caption) or evaluation style (one entry per image)."""
    if per_caption:
        data = [{"image": name, "caption": c, "image_id": name} for name, caps in captions.items() for c in caps]
    else:
        data = [{"image": name, "caption": caps} for name, caps in captions.items()]
    path.write_text(json.dumps(data))
    return path


def write_coco(path: Path, captions: Dict[str, List[str]]) -> Path:
    images = [{"id": 100 + i, "file_name": name} for i, name in enumerate(captions)]
    ids = {name: 100 + i for i, name in enumerate(captions)}
    annotations = [{"id": k, "image_id": ids[name], "caption": c} for k, (name, c) in
                   enumerate((name, c) for name, caps in captions.items() for c in caps)]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def tiny_tokenizer():
    """The built-in shapes WordPiece tokenizer (offline, small); fine for caption fixtures."""
    from mmresearch.data.tokenizer import build_shapes_tokenizer

    return build_shapes_tokenizer()
