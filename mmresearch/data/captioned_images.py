"""Map-style datasets over image files with captions (one split of a real data set).

``CaptionedImages[i]`` is image ``i`` with all its captions (evaluation items);
``CaptionPairs[p]`` is pair ``p``, caption ``p - offsets[i]`` of image ``i`` (training items, picked
by :class:`~mmresearch.data.sampler.CaptionPairSampler`). Items are the dicts the collate functions
read: ``image`` float ``[3, S, S]`` (already transformed), ``image_id``, ``captions`` +
``text_ids`` or ``caption`` + ``text_id``.

Image ids are positions in the split (unique per image); caption ids are positions in the flat
list of the split's captions.

A training pair whose image cannot be read becomes a :class:`~mmresearch.data.skips.Skipped`
marker (missing or corrupt file), left out of its batch and counted. An evaluation image that
cannot be read raises :class:`~mmresearch.data.skips.DataError` naming the file: evaluation sets
never lose samples.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from mmresearch.data.formats import ImageCaptions
from mmresearch.data.skips import DataError, Skipped


def image_path(root: Optional[Union[str, Path]], image: str) -> str:
    """``image`` under ``root`` (``image`` unchanged when absolute or without a root)."""
    if root is None or os.path.isabs(image):
        return image
    return os.path.join(str(root), image)


def read_rgb(path: str) -> Union[Image.Image, Skipped]:
    """The image file as RGB, or a :class:`Skipped` marker saying why it cannot be used. The
    file is decoded in full here (PIL is lazy), so truncated files are caught here too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image.convert("RGB")
    except FileNotFoundError:
        return Skipped("missing_image", path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return Skipped("corrupt_image", path, f"{type(err).__name__}: {err}"[:160])


class CaptionedImages(Dataset):
    """One split: images (paths under ``image_root``) and their captions.

    Args:
        items: the split's images with their captions (at least one each).
        image_root: directory the image paths are relative to (None: as written).
        transform: PIL RGB image -> float ``[3, S, S]`` tensor.
        split: the split's name, for messages.
        strict: raise on an unreadable image (evaluation) instead of returning a marker.
    """

    def __init__(self, items: Sequence[ImageCaptions], image_root: Optional[Union[str, Path]], transform: Callable,
                 split: str = "train", strict: bool = False) -> None:
        if not items:
            raise DataError(f"split {split!r} has no usable images")
        self.paths: List[str] = [image_path(image_root, item.image) for item in items]
        self.captions: List[List[str]] = [list(item.captions) for item in items]
        self.counts = np.array([len(c) for c in self.captions], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.transform = transform
        self.split = split
        self.strict = strict

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_captions(self) -> int:
        return int(self.counts.sum())

    def image_path(self, index: int) -> str:
        """The file of image ``index`` (the embedding export names it)."""
        return self.paths[index]

    def load(self, index: int):
        """The transformed image ``[3, S, S]``, or a :class:`Skipped` marker (not ``strict``)."""
        image = read_rgb(self.paths[index])
        if isinstance(image, Skipped):
            if self.strict:
                raise DataError(
                    f"cannot read image {image.name} of evaluation split {self.split!r} ({image.reason}"
                    f"{': ' + image.detail if image.detail else ''}); evaluation sets never skip samples: fix or remove it from the annotations"
                )
            return image
        return self.transform(image)

    def __getitem__(self, index: int):
        image = self.load(index)
        if isinstance(image, Skipped):
            return image
        ids = (self.offsets[index] + np.arange(self.counts[index])).tolist()
        return {"image": image, "image_id": int(index), "captions": self.captions[index], "text_ids": ids}


class CaptionPairs(Dataset):
    """(image, caption) pairs of a :class:`CaptionedImages` split; pair ``p`` is caption
    ``p - offsets[i]`` of the image ``i`` whose captions hold ``p``. ``text_id == p``."""

    def __init__(self, images: CaptionedImages) -> None:
        self.images = images
        self.pair_image = np.repeat(np.arange(len(images)), images.counts)

    def __len__(self) -> int:
        return len(self.pair_image)

    def __getitem__(self, pair: int):
        index = int(self.pair_image[pair])
        image = self.images.load(index)
        if isinstance(image, Skipped):
            return image
        caption = self.images.captions[index][int(pair - self.images.offsets[index])]
        return {"image": image, "image_id": index, "caption": caption, "text_id": int(pair)}
