"""Labelled image folders (``root/<class name>/<image>``) for zero-shot classification and probes.

Read with torchvision's ``ImageFolder``; class names are the folder names with ``_`` read as a
space. Evaluation never drops a sample: an unreadable image is an error that names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

from mmresearch.utils.errors import ConfigError


def _load_rgb(path: str) -> Image.Image:
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            return image.convert("RGB")
    except Exception as err:  # PIL raises several types; name the file
        raise ValueError(f"cannot read evaluation image {path}: {type(err).__name__}: {err}") from err


class LabelledImageFolder(ImageFolder):
    """``ImageFolder`` whose ``class_names`` are readable (``big_red_circle`` -> ``big red circle``)."""

    @property
    def class_names(self) -> list[str]:
        return [c.replace("_", " ") for c in self.classes]


def labelled_image_folder(
    root: str | Path,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    num_workers: int = 0,
) -> Tuple[LabelledImageFolder, DataLoader]:
    """The dataset and a loader of ``(images [B, 3, S, S] normalised, labels [B])``: shorter side
    resized to ``image_size`` (bicubic), centre-cropped, normalised with ``mean``/``std``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"image folder {str(root)!r} does not exist (expected <root>/<class name>/<image files>)")
    transform = transforms.Compose(
        [
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(list(mean), list(std)),
        ]
    )
    try:
        dataset = LabelledImageFolder(str(root), transform=transform, loader=_load_rgb)
    except FileNotFoundError as err:
        raise ConfigError(f"image folder {str(root)!r}: {err}") from err
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return dataset, loader
