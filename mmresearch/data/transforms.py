"""Image transforms of real data, from timm's data config of the chosen image encoder.

The image encoder's pretrained config gives the resolution, mean, std, interpolation and crop
fraction it was trained with (``timm.data.resolve_data_config``); any of them can be overridden.
Training augmentations go through ``timm.data.create_transform`` (random resized crop scale and
ratio, flips, colour jitter, RandAugment...). Horizontal flips are off by default: captions say
"left" and "right".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import timm
from timm.data import create_transform, resolve_data_config

from mmresearch.utils.errors import ConfigError

log = logging.getLogger(__name__)

#: train augmentations of the default config (RandomResizedCrop at a mild scale, no flips, no jitter)
DEFAULT_TRAIN_AUGMENT = {"scale": (0.9, 1.0), "ratio": (0.75, 1.3333), "hflip": 0.0, "color_jitter": None, "auto_augment": None}


@dataclass(frozen=True)
class ImageConfig:
    """The resolved preprocessing: ``image_size`` (square side), per-channel ``mean``/``std`` of
    [0, 1] pixels, ``interpolation`` and the evaluation ``crop_pct`` (resize to ``size /
    crop_pct``, centre crop ``size``)."""

    image_size: int
    mean: tuple
    std: tuple
    interpolation: str
    crop_pct: float


def resolve_image_config(
    model: Optional[str] = None,
    image_size: Optional[int] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    interpolation: Optional[str] = None,
    crop_pct: Optional[float] = None,
    key: str = "data.transform",
) -> ImageConfig:
    """timm's data config of ``model`` (a timm name, with or without a pretrained tag) with the
    given values taking precedence; without a model: 224 px, ImageNet mean/std, bicubic, 0.875."""
    pretrained: dict = {}
    if model:
        if not timm.is_model(model.split(".")[0]):
            raise ConfigError(f"{key}.model={model!r} is not a timm model name")
        cfg = timm.models.get_pretrained_cfg(model)
        pretrained = cfg.to_dict() if cfg is not None else {}
    resolved = resolve_data_config(pretrained_cfg=pretrained) if pretrained else {}
    size = image_size if image_size is not None else int(resolved.get("input_size", (3, 224, 224))[-1])
    config = ImageConfig(
        image_size=int(size),
        mean=tuple(float(m) for m in (mean if mean is not None else resolved.get("mean", (0.485, 0.456, 0.406)))),
        std=tuple(float(s) for s in (std if std is not None else resolved.get("std", (0.229, 0.224, 0.225)))),
        interpolation=str(interpolation or resolved.get("interpolation", "bicubic")),
        crop_pct=float(crop_pct if crop_pct is not None else resolved.get("crop_pct", 0.875)),
    )
    if config.image_size < 8 or len(config.mean) != 3 or len(config.std) != 3 or min(config.std) <= 0 or not 0 < config.crop_pct <= 1:
        raise ConfigError(f"{key}: invalid image preprocessing {config}")
    return config


#: PIL resampling filters (transformers' ``resample``) by timm's interpolation names
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class ProcessorTransform:
    """A transformers image processor as the evaluation transform: PIL image -> ``[3, S, S]``,
    exactly what the checkpoint's own processor gives (``processor(images=image).pixel_values``,
    :func:`load_image_processor`).
    Picklable (DataLoader workers): it keeps the processor's path and loads it once per process."""

    def __init__(self, processor: str) -> None:
        self.processor = str(processor)
        self._loaded = None

    def __getstate__(self):
        return {"processor": self.processor, "_loaded": None}

    def __call__(self, image):
        if self._loaded is None:
            self._loaded = load_image_processor(self.processor)
        return self._loaded(images=image, return_tensors="pt")["pixel_values"][0]


def load_image_processor(processor: str, key: str = "data.transform.processor"):
    """``AutoImageProcessor.from_pretrained(processor)``: what a user of the checkpoint gets (in
    transformers 5 the torchvision backend, which differs from the PIL one by a grey level at some
    pixels); a missing processor file is a ConfigError naming ``key``."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(processor))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}={processor!r} has no image processor (preprocessor_config.json): {err}. Set {key}=null to use "
                          "the data.transform options instead") from err


def processor_image_config(processor: str, key: str = "data.transform.processor") -> ImageConfig:
    """The size, mean, std, interpolation and crop of a checkpoint's image processor: resize the
    shortest side then centre-crop (CLIP: ``crop_pct`` = crop / shortest side), or resize to the
    square (SigLIP: ``crop_pct`` 1)."""
    p = load_image_processor(processor, key)
    size = dict(getattr(p, "size", None) or {})
    crop = dict(getattr(p, "crop_size", None) or {}) if getattr(p, "do_center_crop", False) else {}
    if "shortest_edge" in size:
        out = int(crop.get("height", size["shortest_edge"]))
        crop_pct = out / int(size["shortest_edge"])
    elif "height" in size:
        out, crop_pct = int(size["height"]), 1.0
    else:
        raise ConfigError(f"{key}={processor!r}: an image processor with size {size} (neither shortest_edge nor height) is not supported")
    mean = tuple(float(m) for m in (p.image_mean if getattr(p, "do_normalize", True) else (0.0, 0.0, 0.0)))
    std = tuple(float(v) for v in (p.image_std if getattr(p, "do_normalize", True) else (1.0, 1.0, 1.0)))
    return ImageConfig(image_size=out, mean=mean, std=std, interpolation=_RESAMPLE.get(int(getattr(p, "resample", 3)), "bicubic"),
                       crop_pct=float(crop_pct))


def build_transforms(config: ImageConfig, train_augment: Optional[Mapping[str, Any]] = None) -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms: PIL RGB image -> float ``[3, S, S]`` normalised.

    ``train_augment`` takes ``timm.data.create_transform``'s training arguments (``scale``,
    ``ratio``, ``hflip``, ``color_jitter``, ``auto_augment``, ``re_prob``...); ``None`` or an
    empty mapping uses :data:`DEFAULT_TRAIN_AUGMENT`; ``{"no_aug": true}`` trains on the
    evaluation transform.
    """
    common = dict(input_size=config.image_size, interpolation=config.interpolation, mean=config.mean, std=config.std)
    augment = dict(DEFAULT_TRAIN_AUGMENT)
    augment.update(dict(train_augment or {}))
    for name in ("scale", "ratio"):
        if augment.get(name) is not None:
            augment[name] = tuple(float(v) for v in augment[name])
    if augment.pop("no_aug", False):
        train = create_transform(is_training=False, crop_pct=config.crop_pct, **common)
    else:
        try:
            train = create_transform(is_training=True, **common, **augment)
        except TypeError as err:
            raise ConfigError(f"data.transform.train_augment={dict(train_augment or {})} is not accepted by timm's create_transform: {err}") from err
    evaluate = create_transform(is_training=False, crop_pct=config.crop_pct, **common)
    return train, evaluate
