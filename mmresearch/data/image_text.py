"""``ImageTextDataModule``: real image-caption data (COCO, Flickr, Karpathy splits, CSV/TSV,
WebDataset shards) with the same batch contract as the built-in data.

Each split is a *source*, a mapping with ``format`` (``karpathy``, ``coco``, ``csv``; the
training split may also be ``webdataset``) and the format's keys (see :data:`SOURCE_KEYS`). A data
set that ships as one file (flickr8k-mini) gives only ``train`` and a ``split``: ``val`` and
``test`` images are drawn from it by a seeded shuffle of the sorted image names, so the split
does not depend on the file's row order.

Bad samples: rows that cannot be read and empty captions are counted when the annotations are
read; image files that are missing are counted at set-up (``check_files``); corrupt images are
counted when loaded. All are left out of training (never replaced) and reported; the run stops
when their share passes ``max_skipped_fraction``. Evaluation splits never lose a sample: any of
these problems there is an error naming the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from mmresearch.data.base import CaptionDataModule
from mmresearch.data.batch import ImageTextBatch
from mmresearch.data.captioned_images import CaptionedImages, CaptionPairs, image_path, read_rgb
from mmresearch.data.collate import PADDING_MODES, EvalCollate, TrainCollate
from mmresearch.data.formats import FORMATS, READERS, Annotations, ImageCaptions
from mmresearch.data.sampler import CAPTION_SAMPLING, CaptionPairSampler
from mmresearch.data.skips import DataError, SkipLedger, Skipped, check_fraction, format_counts
from mmresearch.data.transforms import ProcessorTransform, build_transforms, processor_image_config, resolve_image_config
from mmresearch.data.webdataset import WebDatasetPairs, webdataset_loader
from mmresearch.utils.distributed import world_info
from mmresearch.utils.errors import ConfigError, check_choice

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: the split an evaluation stage reads (``fit`` reads all of them)
STAGE_SPLITS = {"validate": "val", "test": "test", "predict": "test"}
#: keys a source may have, per format (``format`` itself aside)
SOURCE_KEYS: Dict[str, tuple] = {
    "karpathy": ("path", "image_root"),
    "coco": ("path", "image_root"),
    "csv": ("path", "image_root", "image_key", "caption_key", "sep"),
    "webdataset": ("urls", "num_samples", "shuffle_buffer"),
}


def _under(root: Optional[str], path: str) -> str:
    path = os.path.expanduser(str(path))
    return path if root is None or os.path.isabs(path) else os.path.join(root, path)


def _source(spec: Optional[Mapping[str, Any]], split: str, root: Optional[str] = None) -> Optional[dict]:
    """A checked copy of a split's source, relative paths under ``root``; None stays None."""
    if spec is None:
        return None
    spec = dict(spec)
    fmt = spec.pop("format", None)
    allowed = FORMATS + (("webdataset",) if split == "train" else ())
    check_choice(f"data.{split}.format", fmt, allowed)
    unknown = sorted(set(spec) - set(SOURCE_KEYS[fmt]))
    if unknown:
        raise ConfigError(f"data.{split}: keys {unknown} are not options of format {fmt!r}; allowed: {list(SOURCE_KEYS[fmt])}")
    required = ("urls", "num_samples") if fmt == "webdataset" else ("path",)
    for key in required:
        if spec.get(key) in (None, ""):
            raise ConfigError(f"data.{split}.{key} is required for format {fmt!r}")
    if fmt != "webdataset":
        spec["path"] = _under(root, spec["path"])
        spec["image_root"] = _under(root, spec["image_root"]) if spec.get("image_root") else str(Path(spec["path"]).parent)
    elif root is not None:
        urls = spec["urls"]
        parts = [p for u in ([urls] if isinstance(urls, str) else urls) for p in str(u).split("::")]
        spec["urls"] = [p if ":" in p.split("/")[0] else _under(root, p) for p in parts]  # URLs (s3://, pipe:) as given
    return {"format": fmt, **spec}


def read_source(spec: Mapping[str, Any], split: str) -> Annotations:
    """Read a (checked) map-style source's annotation file."""
    options = {k: v for k, v in spec.items() if k not in ("format", "path", "image_root") and v is not None}
    if spec["format"] == "csv":
        options["key_prefix"] = f"data.{split}"
    return READERS[spec["format"]](spec["path"], **options)


def split_by_image(items: Sequence[ImageCaptions], sizes: Mapping[str, int], seed: int) -> Dict[str, List[ImageCaptions]]:
    """Deterministic ``val``/``test`` images drawn from ``items`` (a seeded permutation of the
    sorted image names: test first, then val); the rest is ``train``, in the file's order."""
    names = sorted(item.image for item in items)
    order = np.random.default_rng(int(seed)).permutation(len(names))
    n_test, n_val = int(sizes.get("test", 0)), int(sizes.get("val", 0))
    if n_test < 0 or n_val < 0 or n_test + n_val >= len(names):
        raise ConfigError(f"data.split: val={n_val} + test={n_test} images must be >= 0 and fewer than the {len(names)} images of data.train")
    test = {names[i] for i in order[:n_test]}
    val = {names[i] for i in order[n_test : n_test + n_val]}
    return {
        "train": [item for item in items if item.image not in test and item.image not in val],
        "val": sorted((item for item in items if item.image in val), key=lambda item: item.image),
        "test": sorted((item for item in items if item.image in test), key=lambda item: item.image),
    }


class ImageTextDataModule(CaptionDataModule):
    """Real image-caption data; see the module docstring.

    Args:
        tokenizer: a ``transformers`` tokenizer (built by the training script).
        train, val, test: the splits' sources (``val``/``test`` may be None when ``split`` draws them).
        split: ``{val: images, test: images, seed: int}`` drawn from ``train`` (map-style only).
        root: base directory of relative source paths and image roots (None: as given, i.e.
            relative to the working directory).
        image_size: square side of the images (None: the image encoder's, from timm).
        transform: ``processor`` (a transformers checkpoint whose image processor gives the
            preprocessing, its evaluation exactly: ``model=clip`` sets it), ``model`` (timm name whose data config is used), ``mean``, ``std``,
            ``interpolation``, ``crop_pct`` (None: timm's), ``train_augment`` (arguments of
            ``timm.data.create_transform`` for training).
        batch_size / eval_batch_size: pairs per training batch / images per evaluation batch.
        num_workers, pin_memory, persistent_workers: ``DataLoader`` options.
        max_text_length, padding: token length and padding mode (``max_length`` or ``longest``).
        lowercase: lower-case captions before tokenising.
        caption_sampling: ``random`` (every image once per epoch with one random caption) or
            ``all`` (every pair once per epoch); map-style training sources only.
        seed: seed of the training order and of stream shuffling.
        max_skipped_fraction: the largest share of skipped training samples (at set-up and in
            each epoch) before the run stops with an error.
        check_files: look for every image file at set-up (missing training images are skipped
            and counted; a missing evaluation image is an error).
    """

    def __init__(
        self,
        tokenizer,
        train: Optional[Mapping[str, Any]] = None,
        val: Optional[Mapping[str, Any]] = None,
        test: Optional[Mapping[str, Any]] = None,
        split: Optional[Mapping[str, int]] = None,
        root: Optional[str] = None,
        image_size: Optional[int] = None,
        transform: Optional[Mapping[str, Any]] = None,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        max_text_length: int = 32,
        padding: str = "longest",
        lowercase: bool = False,
        caption_sampling: str = "random",
        seed: int = 0,
        max_skipped_fraction: float = 0.01,
        check_files: bool = True,
    ) -> None:
        super().__init__()
        if tokenizer is None or getattr(tokenizer, "pad_token_id", None) is None:
            raise ConfigError("ImageTextDataModule needs a tokenizer with a padding token (the `tokenizer` config group)")
        self.tokenizer = tokenizer
        root = os.path.expanduser(str(root)) if root else None
        self.sources = {name: _source(spec, name, root) for name, spec in (("train", train), ("val", val), ("test", test))}
        if self.sources["train"] is None:
            raise ConfigError("data.train is required (the training source)")
        self.split_sizes = dict(split) if split else None
        self.split_seed = int(self.split_sizes.pop("seed", 0)) if self.split_sizes else 0
        if self.split_sizes and set(self.split_sizes) - {"val", "test"}:
            raise ConfigError(f"data.split takes val, test and seed, got {sorted(self.split_sizes)}")
        for name in ("val", "test"):
            drawn = bool(self.split_sizes and self.split_sizes.get(name))
            if drawn and self.sources[name] is not None:
                raise ConfigError(f"data.{name} is given and data.split.{name} draws it from data.train: set one of them")
            if not drawn and self.sources[name] is None:
                raise ConfigError(f"data.{name}: give a source or draw it from data.train with data.split.{name}=<images>")
        if self.split_sizes and self.sources["train"]["format"] == "webdataset":
            raise ConfigError("data.split cannot draw evaluation images from a webdataset stream: give data.val and data.test")
        transform = dict(transform or {})
        augment = transform.pop("train_augment", None)
        processor = transform.pop("processor", None)
        unknown = sorted(set(transform) - {"model", "mean", "std", "interpolation", "crop_pct"})
        if unknown:
            raise ConfigError(f"data.transform: unknown keys {unknown}")
        if processor:  # the checkpoint's own preprocessing (model=clip): evaluation exactly as its processor
            self.image_config = processor_image_config(processor)
            if image_size is not None and int(image_size) != self.image_config.image_size:
                raise ConfigError(f"data.image_size={image_size} but the processor data.transform.processor={processor!r} gives "
                                  f"{self.image_config.image_size} px: remove data.image_size (or set data.transform.processor=null)")
            self.train_transform = build_transforms(self.image_config, augment)[0]
            self.eval_transform = ProcessorTransform(processor)
        else:
            self.image_config = resolve_image_config(image_size=image_size, **transform)
            self.train_transform, self.eval_transform = build_transforms(self.image_config, augment)
        self.batch_size = _positive("batch_size", batch_size)
        self.eval_batch_size = _positive("eval_batch_size", eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.max_text_length = _positive("max_text_length", max_text_length)
        check_choice("data.padding", padding, PADDING_MODES)
        check_choice("data.caption_sampling", caption_sampling, CAPTION_SAMPLING)
        self.padding, self.caption_sampling, self.lowercase = padding, caption_sampling, bool(lowercase)
        self.seed = int(seed)
        if not 0 <= float(max_skipped_fraction) <= 1:
            raise ConfigError(f"data.max_skipped_fraction must be in [0, 1], got {max_skipped_fraction!r}")
        self.max_skipped_fraction = float(max_skipped_fraction)
        self.check_files = bool(check_files)
        self.skip_ledger = SkipLedger()
        self._splits: Dict[str, Any] = {}
        self.save_hyperparameters(
            {"sources": self.sources, "split": split and dict(split), "image": vars(self.image_config), "batch_size": self.batch_size,
             "max_text_length": self.max_text_length, "lowercase": self.lowercase, "caption_sampling": self.caption_sampling,
             "max_skipped_fraction": self.max_skipped_fraction, "tokenizer": type(tokenizer).__name__, "vocab_size": len(tokenizer)}
        )

    # ------------------------------------------------------------------------------------------
    # What models and callbacks read (no class labels, no hard negatives, no questions)

    label_names: tuple = ()
    class_names: dict = {}
    zero_shot_templates: dict = {}
    num_classes: dict = {}
    neg_kind_names: tuple = ()

    @property
    def image_size(self) -> int:
        return self.image_config.image_size

    @property
    def mean(self) -> tuple:
        return self.image_config.mean

    @property
    def std(self) -> tuple:
        return self.image_config.std

    # ------------------------------------------------------------------------------------------
    # Reading the sources

    def setup(self, stage: Optional[str] = None) -> None:
        """Reads the sources of the splits a stage uses: ``fit`` (or None) all of them,
        ``validate`` the validation split, ``test``/``predict`` the test split. An evaluation reads
        the training annotations only when its split is drawn from them (``data.split``), and then
        without checking the training images; COCO's validation images drawn from train2017 are not
        needed to test on val2017."""
        training = stage in (None, "fit")
        wanted = set(SPLITS) if training else {STAGE_SPLITS.get(stage, "test")}
        if wanted <= set(self._splits):
            return
        train_spec = self.sources["train"]
        items: Dict[str, List[ImageCaptions]] = {}
        if train_spec["format"] == "webdataset":
            if training:
                rank, world = world_info()
                self._splits["train"] = WebDatasetPairs(
                    train_spec["urls"], train_spec["num_samples"], self.train_transform,
                    shuffle_buffer=int(train_spec.get("shuffle_buffer") or 0), seed=self.seed, batch_size=self.batch_size,
                    rank=rank, world_size=world,
                )
        elif training or any(self.sources[name] is None for name in wanted):
            ann = read_source(train_spec, "train")
            drawn = split_by_image(ann.items, self.split_sizes, self.split_seed) if self.split_sizes else {"train": ann.items}
            for name in ("val", "test"):
                if name in drawn and name in wanted:
                    thinned = sorted(ann.thinned & {item.image for item in drawn[name]})
                    if thinned:
                        raise DataError(
                            f"images {thinned[:5]} drawn into evaluation split {name!r} lost rows of {ann.source} "
                            f"({format_counts(ann.skipped)} in all); evaluation sets never skip samples: fix the file"
                        )
                    items[name] = drawn[name]
            if training:
                kept = self._drop_missing(drawn["train"], train_spec["image_root"], ann)
                self.skip_ledger.add_setup(ann.skipped, ann.samples, ann.examples)
                log.info("data.train (%s): %d images, %d captions; skipped at set-up: %s", ann.source, len(kept),
                         sum(len(i.captions) for i in kept), format_counts(ann.skipped))
                check_fraction(f"reading data.train ({ann.source})", ann.skipped, ann.samples - sum(ann.skipped.values()),
                               self.max_skipped_fraction, ann.examples)
                items["train"] = kept
        for name in ("val", "test"):
            spec = self.sources[name]
            if spec is not None and name in wanted:
                ann = read_source(spec, name)
                if ann.skipped:
                    raise DataError(
                        f"evaluation split {name!r} ({ann.source}) has rows that cannot be used ({format_counts(ann.skipped)}), "
                        f"e.g. {[n for names in ann.examples.values() for n in names][:5]}; evaluation sets never skip samples: fix the file"
                    )
                items[name] = ann.items
        for name, split_items in items.items():
            root = (self.sources[name] or train_spec)["image_root"]
            if name != "train":
                self._check_eval_images(split_items, root, name, (self.sources[name] or train_spec)["path"])
            transform = self.train_transform if name == "train" else self.eval_transform
            self._splits[name] = CaptionedImages(split_items, root, transform, split=name, strict=name != "train")

    def _drop_missing(self, items: List[ImageCaptions], root: str, ann: Annotations) -> List[ImageCaptions]:
        """The training images whose file exists; the others' captions are counted as skipped."""
        if not self.check_files:
            return items
        kept = []
        for item in items:
            path = image_path(root, item.image)
            if os.path.isfile(path):
                kept.append(item)
            else:
                ann.skip("missing_image", path, count=len(item.captions))
        return kept

    def _check_eval_images(self, items: List[ImageCaptions], root: str, split: str, source: str) -> None:
        """Every evaluation image exists and decodes, checked the same way on every rank at set-up
        (an image failing later, on the one rank whose shard holds it, would stall the others)."""
        if not self.check_files:
            return
        bad = []
        for item in items:
            path = image_path(root, item.image)
            problem = read_rgb(path) if os.path.isfile(path) else Skipped("missing_image", path)
            if isinstance(problem, Skipped):
                bad.append(f"{path} ({problem.reason})")
        if bad:
            raise DataError(
                f"{len(bad)} image(s) of evaluation split {split!r} ({source}) are missing or cannot be read, e.g. {bad[:5]}; "
                "evaluation sets never skip samples: fix the files, the paths (data.<split>.image_root) or the annotations"
            )

    def dataset(self, split: str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
        if split not in self._splits:
            self.setup({"train": "fit", "val": "validate"}.get(split, "test"))
        return self._splits[split]

    # ------------------------------------------------------------------------------------------
    # Loaders

    def _collate_kwargs(self) -> dict:
        return dict(max_length=self.max_text_length, padding=self.padding, normalize=False, lowercase=self.lowercase,
                    with_negatives=False, with_questions=False)

    def train_dataloader(self):
        ds = self.train_dataset
        collate = TrainCollate(self.tokenizer, report_skips=True, **self._collate_kwargs())
        if isinstance(ds, WebDatasetPairs):
            if len(ds) == 0:
                raise ConfigError(f"data.train.num_samples={ds.num_samples} is less than one batch per rank (data.batch_size={self.batch_size})")
            ds.set_epoch(self._fit_epoch())  # before the workers start (see _fit_epoch)
            return webdataset_loader(ds, collate, self.num_workers, self.pin_memory, torch.Generator().manual_seed(self.seed))
        sampler = CaptionPairSampler(len(ds), ds.counts, self.caption_sampling, self.seed)
        describe = f"{len(ds)} training images, data.caption_sampling={self.caption_sampling!r}"
        return self._pair_loader(CaptionPairs(ds), sampler, collate, describe)

    def _eval_loader(self, split: str, limit: Optional[int] = None) -> DataLoader:
        return self._split_loader(split, EvalCollate(self.tokenizer, **self._collate_kwargs()), limit)

    def labelled_image_loader(self, split: str, limit: Optional[int] = None) -> DataLoader:
        """Evaluation batches of the first ``limit`` images of a split (no class labels here)."""
        return self._eval_loader(split, limit)

    # ------------------------------------------------------------------------------------------
    # Skipped samples of training batches

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts the samples a training batch left out and, under DDP, cuts every rank's batch
        to the smallest one, so the contrastive losses gather equal sizes (the pairs cut are
        counted as ``ddp_balance``)."""
        if not isinstance(batch, ImageTextBatch) or batch.skipped is None or self.trainer is None or not self.trainer.training:
            return batch
        size = batch.num_images
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            smallest = torch.tensor([size], device=batch.images.device)
            dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
            size = int(smallest)
        if size == 0:  # decided from the reduced size, so every rank stops together
            raise DataError(
                f"a training batch had no usable sample (on this rank: {batch.num_images} of {batch.num_images + sum(map(len, batch.skipped.values()))}; "
                f"skipped {batch.skipped}); the data is too broken to train on"
            )
        if size < batch.num_images:
            self.skip_ledger.add_dropped("ddp_balance", batch.num_images - size)
            batch.first_pairs(size)
        self.skip_ledger.add_batch(batch.skipped, batch.num_images)
        return batch

    def state_dict(self) -> Dict[str, Any]:
        """The skip counts so far (stored in checkpoints: a resumed run reports every epoch)."""
        ledger = self.skip_ledger
        return {"skip_history": list(ledger.history), "epoch_skipped": dict(ledger.epoch_skipped), "epoch_used": ledger.epoch_used,
                "examples": {k: dict(v) for k, v in ledger.examples.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores the counts when a fit resumes (testing the best checkpoint keeps this run's)."""
        fn = getattr(getattr(self.trainer, "state", None), "fn", None) if self.trainer is not None else None
        if fn is not None and str(getattr(fn, "value", fn)) != "fit":
            return
        ledger = self.skip_ledger
        ledger.history = list(state.get("skip_history", []))
        # the epoch in progress: the checkpoint holds rank 0's counts; the other ranks' are lost
        # (a mid-epoch resume under DDP undercounts that one epoch rather than multiply it)
        if getattr(self.trainer, "global_rank", 0) == 0 if self.trainer is not None else True:
            ledger.epoch_skipped.update(state.get("epoch_skipped", {}))
            ledger.epoch_used += int(state.get("epoch_used", 0))
        ledger.restore_examples(state.get("examples", {}))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"data.{name} must be an integer >= 1, got {value!r}")
    return int(value)
