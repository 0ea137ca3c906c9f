"""``ShapesDataModule``: the procedural shapes dataset as a Lightning data module.

Batches are :class:`~mmresearch.data.batch.ImageTextBatch`: training batches are (image, caption)
pairs; validation/test batches hold each image once with all its captions, class labels, a hard
negative caption and questions/answers.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from mmresearch.data.base import CaptionDataModule
from mmresearch.data.collate import PADDING_MODES, EvalCollate, TrainCollate, _per_channel
from mmresearch.data.sampler import CAPTION_SAMPLING, CaptionPairSampler
from mmresearch.data.shapes.dataset import CaptionPairDataset, ShapesDataset
from mmresearch.data.shapes.prompts import ZERO_SHOT_TEMPLATES
from mmresearch.data.shapes.scene import LABEL_NAMES, NEG_KIND_NAMES, check_split_size, class_names
from mmresearch.data.shapes.vocabulary import DEFAULT_COLOURS, DEFAULT_SHAPES, DEFAULT_SIZES, MAX_OBJECTS, ShapesVocab

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _int_option(name: str, value, minimum: int, allowed: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"data.{name} must be an integer >= {minimum}{allowed}, got {value!r}")
    return int(value)


class ShapesDataModule(CaptionDataModule):
    """Procedural shapes image-caption data (see :mod:`mmresearch.data.shapes`).

    Args:
        tokenizer: a ``transformers`` tokenizer (built by the training script); ``None`` builds the
            shapes WordPiece tokenizer (:func:`~mmresearch.data.tokenizer.build_shapes_tokenizer`).
        image_size: side of the square RGB images (>= 32).
        train_size, val_size, test_size: number of images (= unique scenes) per split.
        captions_per_image: captions per image (C).
        questions_per_image: questions per image (Q); 0 disables questions.
        seed: base seed; each split uses streams derived from it and the split name.
        shapes, colours, sizes: attribute values to use (subsets of the vocabulary).
        count_weights: relative frequency of scenes with 1, 2, 3 objects (in a split of unique
            scenes, counts whose scenes are used up are skipped).
        unique_train_scenes: also make canonical descriptions unique in the training split. Off
            by default: only 630 one-object and 9,660 two-object scenes exist, so a large unique
            training split is mostly three-object scenes while val/test keep the asked mix. With
            it off, training scenes are drawn with replacement (each draw rendered anew) and all
            renders of one scene share an ``image_id``, so the losses treat them and their
            captions as positives. Validation and test splits are always unique.
        train_negatives_per_image: hard negatives generated per training image (K); a training
            pair uses negative ``caption index % K``, so each epoch's new caption draw also brings a
            different negative (validation/test keep one negative per image).
        batch_size / eval_batch_size: images per training / evaluation batch.
        num_workers, pin_memory, persistent_workers: ``DataLoader`` options.
        max_text_length: token length texts are truncated (and with ``padding="max_length"``
            padded) to.
        padding: ``"max_length"`` (fixed ``L``) or ``"longest"`` (longest text in the batch).
        caption_sampling: ``"random"`` (each image once per epoch with one random caption) or
            ``"all"`` (every image-caption pair once per epoch).
        mean, std: image normalisation (a number or one per channel), applied after scaling to [0, 1].
        train_negatives, train_questions: also put hard negatives / questions in training batches.
    """

    def __init__(
        self,
        tokenizer=None,
        image_size: int = 64,
        train_size: int = 30000,
        val_size: int = 1000,
        test_size: int = 1000,
        captions_per_image: int = 5,
        questions_per_image: int = 3,
        seed: int = 0,
        shapes: Sequence[str] = DEFAULT_SHAPES,
        colours: Sequence[str] = DEFAULT_COLOURS,
        sizes: Sequence[str] = DEFAULT_SIZES,
        count_weights: Sequence[float] = (1.0, 1.0, 1.0),
        unique_train_scenes: bool = False,
        train_negatives_per_image: int = 1,
        batch_size: int = 256,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        max_text_length: int = 32,
        padding: str = "max_length",
        caption_sampling: str = "random",
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        train_negatives: bool = False,
        train_questions: bool = False,
    ) -> None:
        super().__init__()
        self.image_size = _int_option("image_size", image_size, 32)
        self.split_sizes = {
            "train": _int_option("train_size", train_size, 0),
            "val": _int_option("val_size", val_size, 0),
            "test": _int_option("test_size", test_size, 0),
        }
        self.captions_per_image = _int_option("captions_per_image", captions_per_image, 1)
        self.questions_per_image = _int_option("questions_per_image", questions_per_image, 0)
        self.seed = _int_option("seed", seed, 0)
        self.batch_size = _int_option("batch_size", batch_size, 1)
        self.eval_batch_size = _int_option("eval_batch_size", eval_batch_size, 1)
        self.num_workers = _int_option("num_workers", num_workers, 0)
        self.max_text_length = _int_option("max_text_length", max_text_length, 4)
        if padding not in PADDING_MODES:
            raise ValueError(f"data.padding must be one of {list(PADDING_MODES)}, got {padding!r}")
        if caption_sampling not in CAPTION_SAMPLING:
            raise ValueError(f"data.caption_sampling must be one of {list(CAPTION_SAMPLING)}, got {caption_sampling!r}")
        self.padding = padding
        self.caption_sampling = caption_sampling
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.mean = _per_channel(mean, "mean")
        self.std = _per_channel(std, "std")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"data.std must be > 0, got {list(self.std)}")
        self.train_negatives = bool(train_negatives)
        self.train_questions = bool(train_questions)
        self.vocab = ShapesVocab(tuple(shapes), tuple(colours), tuple(sizes))
        weights = [float(w) for w in count_weights]
        if len(weights) != MAX_OBJECTS or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"data.count_weights must be {MAX_OBJECTS} non-negative weights (scenes with 1..{MAX_OBJECTS} "
                f"objects) with a positive sum, got {list(count_weights)}"
            )
        self.count_weights = tuple(weights)
        self.unique_train_scenes = bool(unique_train_scenes)
        self.train_negatives_per_image = _int_option("train_negatives_per_image", train_negatives_per_image, 1)
        for split, size in self.split_sizes.items():
            if split != "train" or self.unique_train_scenes:
                check_split_size(split, size, self.vocab, self.count_weights)

        if tokenizer is None:
            from mmresearch.data.tokenizer import build_shapes_tokenizer

            tokenizer = build_shapes_tokenizer()
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError("the tokenizer given to ShapesDataModule has no padding token")
        self.tokenizer = tokenizer
        self.save_hyperparameters(
            {
                "image_size": self.image_size,
                **{f"{k}_size": v for k, v in self.split_sizes.items()},
                "captions_per_image": self.captions_per_image,
                "questions_per_image": self.questions_per_image,
                "seed": self.seed,
                "shapes": list(self.vocab.shapes),
                "colours": list(self.vocab.colours),
                "sizes": list(self.vocab.sizes),
                "count_weights": list(self.count_weights),
                "unique_train_scenes": self.unique_train_scenes,
                "train_negatives_per_image": self.train_negatives_per_image,
                "batch_size": self.batch_size,
                "eval_batch_size": self.eval_batch_size,
                "max_text_length": self.max_text_length,
                "padding": self.padding,
                "caption_sampling": self.caption_sampling,
                "mean": list(self.mean),
                "std": list(self.std),
                "tokenizer": type(tokenizer).__name__,
                "vocab_size": len(tokenizer),
            }
        )
        self._datasets: dict[str, ShapesDataset] = {}
        self._train_sampler: Optional[CaptionPairSampler] = None

    # ------------------------------------------------------------------------------------------
    # What models read

    @property
    def label_names(self) -> tuple[str, ...]:
        """Kinds of class labels, the columns of ``batch.labels``."""
        return LABEL_NAMES

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Class names per label kind (index = class id)."""
        return class_names(self.vocab)

    @property
    def zero_shot_templates(self) -> dict[str, list[str]]:
        """Prompt templates per label kind for zero-shot classification (``{}`` = class name)."""
        return {kind: list(templates) for kind, templates in ZERO_SHOT_TEMPLATES.items()}

    @property
    def num_classes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.class_names.items()}

    @property
    def neg_kind_names(self) -> tuple[str, ...]:
        """Kinds of hard negatives, indexed by ``batch.neg_kinds``."""
        return NEG_KIND_NAMES

    @property
    def answer_vocab(self) -> tuple[str, ...]:
        """The closed answer vocabulary, indexed by ``batch.answers``."""
        return self.vocab.answer_vocab

    @property
    def num_answers(self) -> int:
        return len(self.answer_vocab)

    # ------------------------------------------------------------------------------------------
    # Splits

    def dataset(self, split: str) -> ShapesDataset:
        """The split's dataset, generated on first use and cached."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
        if split not in self._datasets:
            ds = ShapesDataset(
                self.split_sizes[split],
                split=split,
                seed=self.seed,
                image_size=self.image_size,
                captions_per_image=self.captions_per_image,
                questions_per_image=self.questions_per_image,
                vocab=self.vocab,
                count_weights=self.count_weights,
                unique_scenes=split != "train" or self.unique_train_scenes,
                negatives_per_image=self.train_negatives_per_image if split == "train" else 1,
            )
            log.info("generated %s in %.1f s", ds, ds.generation_seconds)
            self._check_text_length(ds)
            self._datasets[split] = ds
        return self._datasets[split]

    def _check_text_length(self, ds: ShapesDataset, longest: int = 64) -> None:
        """Warns when the longest texts of a split do not fit in ``max_text_length`` tokens."""
        texts = [c for cs in ds.captions for c in cs] + ds.neg_captions + [q for qs in ds.questions for q in qs]
        if not texts:
            return
        texts = sorted(texts, key=len)[-longest:]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        if max(lengths) > self.max_text_length:
            log.warning(
                "data.max_text_length=%d truncates texts of split %r (the longest has %d tokens with this "
                "tokenizer); truncated captions no longer describe the whole scene",
                self.max_text_length,
                ds.split,
                max(lengths),
            )

    def setup(self, stage: Optional[str] = None) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in needed.get(stage, SPLITS) if stage is not None else SPLITS:
            self.dataset(split)

    # ------------------------------------------------------------------------------------------
    # Loaders

    def _collate_kwargs(self) -> dict:
        return dict(max_length=self.max_text_length, mean=self.mean, std=self.std, padding=self.padding)

    def train_dataloader(self) -> StatefulDataLoader:
        """Resumable mid-epoch: Lightning keeps this loader's position in checkpoints, and a run
        resumed from one continues with the next batch of the same epoch. Its own generator
        seeds the workers, so building it leaves the global RNG streams alone."""
        ds = self.train_dataset
        sampler = CaptionPairSampler(len(ds), self.captions_per_image, self.caption_sampling, self.seed)
        collate = TrainCollate(
            self.tokenizer,
            with_negatives=self.train_negatives,
            with_questions=self.train_questions and self.questions_per_image > 0,
            **self._collate_kwargs(),
        )
        describe = f"data.train_size={len(ds)}, data.caption_sampling={self.caption_sampling!r}"
        return self._pair_loader(CaptionPairDataset(ds), sampler, collate, describe)

    def _eval_loader(self, split: str) -> DataLoader:
        collate = EvalCollate(
            self.tokenizer, with_negatives=True, with_questions=self.questions_per_image > 0, **self._collate_kwargs()
        )
        return self._split_loader(split, collate)

    def labelled_image_loader(self, split: str, limit: Optional[int] = None) -> DataLoader:
        """Evaluation batches (images with ``labels [B, K]``) of the first ``limit`` images of a
        split, in order: what zero-shot classification and linear probes read."""
        collate = EvalCollate(self.tokenizer, with_negatives=False, with_questions=False, **self._collate_kwargs())
        return self._split_loader(split, collate, limit)
