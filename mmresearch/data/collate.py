"""Collate functions: tokenise captions and build :class:`~mmresearch.data.batch.ImageTextBatch`.

Both are picklable callables (they work in ``DataLoader`` worker processes). All texts of one
batch (captions, hard negatives, questions) are tokenised together, so they share the padded
length ``L`` (``max_text_length`` with ``padding="max_length"``, else the longest text in the batch).
Tokenisation (:class:`TextEncoder`) gives exactly what ``tokenizer(texts, padding=...,
truncation=True, max_length=...)`` gives, about 4x faster, and memoises the ids of seen texts.

Items are the dicts of :class:`~mmresearch.data.shapes.dataset.ShapesDataset` (eval) and
:class:`~mmresearch.data.shapes.dataset.CaptionPairDataset` (train): ``image`` uint8 ``[3, H, W]``,
``image_id``, ``captions`` / ``caption`` + ``text_id``, ``labels``, ``neg_caption``, ``neg_kind``,
``questions``, ``answers``; or those of the real-data sets
(:mod:`mmresearch.data.captioned_images`, :mod:`mmresearch.data.webdataset`): ``image`` float,
already transformed (``normalize=False``), no labels, ``text_ids`` per caption. With
``report_skips=True`` an item may be a :class:`~mmresearch.data.skips.Skipped` marker: it is left
out of the batch and named in ``batch.skipped``.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from mmresearch.data.batch import ImageTextBatch
from mmresearch.data.skips import Skipped, summarize

PADDING_MODES = ("max_length", "longest")


def _per_channel(value, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        value = (float(value),) * 3
    value = tuple(float(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"data.{name} must be a number or 3 numbers (one per RGB channel), got {list(value)}")
    return value  # type: ignore[return-value]


class ImageNormalizer:
    """uint8 ``[B, 3, H, W]`` -> float32 ``(x / 255 - mean) / std``."""

    def __init__(self, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> None:
        self.mean = _per_channel(mean, "mean")
        self.std = _per_channel(std, "std")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"data.std must be > 0, got {list(self.std)}")
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std]).view(1, 3, 1, 1)
        self._shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)]).view(1, 3, 1, 1)

    def __call__(self, images: Tensor) -> Tensor:
        return images.float().mul_(self._scale).sub_(self._shift)


class TextEncoder:
    """Tokenises texts like ``tokenizer(texts, padding=..., truncation=True, max_length=...)`` but
    faster: it calls the Rust backend of fast tokenizers directly, memoises the ids of every text it
    has seen (captions repeat across epochs) and pads with numpy. Returns long ``input_ids`` and
    ``attention_mask`` ``[len(texts), L]``."""

    def __init__(self, tokenizer, max_length: int = 32, padding: str = "max_length", cache_size: int = 2_000_000):
        if padding not in PADDING_MODES:
            raise ValueError(f"data.padding must be one of {list(PADDING_MODES)}, got {padding!r}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no padding token; set tokenizer.pad_token first")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.padding = padding
        self.pad_id = int(tokenizer.pad_token_id)
        self.left = getattr(tokenizer, "padding_side", "right") == "left"
        self.cache_size = cache_size
        self._cache: dict[str, np.ndarray] = {}
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        if backend is not None:
            backend = copy.deepcopy(backend)
            backend.no_padding()
            backend.enable_truncation(max_length=self.max_length)
        self._backend = backend

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if self._backend is not None:
            encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
            return [e.ids for e in encode(texts)]
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        cache = self._cache
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            if len(cache) + len(missing) > self.cache_size:
                cache.clear()
            for text, ids in zip(missing, self._encode(missing)):
                cache[text] = np.asarray(ids, dtype=np.int64)
        rows = [cache[t] for t in texts]
        longest = max((len(r) for r in rows), default=0)
        length = self.max_length if self.padding == "max_length" else longest
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            n = len(row)
            if self.left:
                ids[i, length - n :], mask[i, length - n :] = row, 1
            else:
                ids[i, :n], mask[i, :n] = row, 1
        return torch.from_numpy(ids), torch.from_numpy(mask)


class _TokenizingCollate:
    def __init__(
        self,
        tokenizer,
        max_length: int = 32,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        padding: str = "max_length",
        with_negatives: bool = True,
        with_questions: bool = True,
        normalize: bool = True,
        lowercase: bool = False,
        report_skips: bool = False,
    ) -> None:
        self.tokenize = TextEncoder(tokenizer, max_length, padding)
        self.normalize = ImageNormalizer(mean, std) if normalize else None
        self.with_negatives = with_negatives
        self.with_questions = with_questions
        self.lowercase = lowercase
        self.report_skips = report_skips

    def _usable(self, items: list) -> tuple[list[dict], dict | None]:
        """The items that are samples, and ``{reason: [names]}`` of the skipped ones."""
        if not self.report_skips:
            return items, None
        good = [item for item in items if not isinstance(item, Skipped)]
        skipped = summarize(item for item in items if isinstance(item, Skipped))
        return good, skipped

    def _build(self, items: list[dict], captions: list[str], text_image_ids: Tensor, text_ids: Tensor) -> ImageTextBatch:
        b = len(items)
        texts = [c.lower() for c in captions] if self.lowercase else list(captions)
        if self.with_negatives:
            texts.extend(item["neg_caption"] for item in items)
        q = len(items[0]["questions"]) if self.with_questions else 0
        if q:
            texts.extend(question for item in items for question in item["questions"])
        input_ids, attention_mask = self.tokenize(texts)
        t = len(captions)
        images = torch.stack([item["image"] for item in items])
        batch = ImageTextBatch(
            images=self.normalize(images) if self.normalize is not None else images,
            image_ids=torch.tensor([item["image_id"] for item in items], dtype=torch.long),
            input_ids=input_ids[:t],
            attention_mask=attention_mask[:t],
            text_image_ids=text_image_ids,
            text_ids=text_ids,
            labels=torch.stack([item["labels"] for item in items]).long() if "labels" in items[0] else None,
        )
        offset = t
        if self.with_negatives:
            batch.neg_input_ids = input_ids[offset : offset + b]
            batch.neg_attention_mask = attention_mask[offset : offset + b]
            batch.neg_kinds = torch.tensor([item["neg_kind"] for item in items], dtype=torch.long)
            batch.neg_image_ids = torch.tensor([item["neg_image_id"] for item in items], dtype=torch.long)
            offset += b
        if q:
            length = input_ids.shape[1]
            batch.question_input_ids = input_ids[offset : offset + b * q].reshape(b, q, length)
            batch.question_attention_mask = attention_mask[offset : offset + b * q].reshape(b, q, length)
            batch.answers = torch.stack([item["answers"] for item in items]).long()
        return batch


class TrainCollate(_TokenizingCollate):
    """(image, caption) pairs -> a paired batch: ``T == B``, ``text_image_ids == image_ids``,
    ``text_ids`` = pair index (``image_id * C + caption index``). Hard negatives and questions are
    included only when asked for (off by default: they cost tokenisation time)."""

    def __init__(self, tokenizer, *args, with_negatives: bool = False, with_questions: bool = False, **kwargs) -> None:
        super().__init__(tokenizer, *args, with_negatives=with_negatives, with_questions=with_questions, **kwargs)

    def __call__(self, items: list) -> ImageTextBatch:
        items, skipped = self._usable(items)
        if not items:  # every sample skipped: an empty batch that still says why (the data module decides)
            empty = torch.zeros(0, dtype=torch.long)
            return ImageTextBatch(images=torch.zeros(0, 3, 1, 1), image_ids=empty, input_ids=torch.zeros(0, 1, dtype=torch.long),
                                  attention_mask=torch.zeros(0, 1, dtype=torch.long), text_image_ids=empty, text_ids=empty, skipped=skipped)
        image_ids = torch.tensor([item["image_id"] for item in items], dtype=torch.long)
        text_ids = torch.tensor([item["text_id"] for item in items], dtype=torch.long)
        batch = self._build(items, [item["caption"] for item in items], image_ids, text_ids)
        batch.skipped = skipped
        return batch


class EvalCollate(_TokenizingCollate):
    """Whole images -> an eval batch: each image once with its ``C`` captions flattened image by
    image (``T = B * C``), ``text_image_ids`` mapping captions to images, ``text_ids = image_id * C
    + caption index``, plus labels, hard negatives and questions/answers."""

    def __call__(self, items: list[dict]) -> ImageTextBatch:
        per_image = [len(item["captions"]) for item in items]
        image_ids = torch.tensor([item["image_id"] for item in items], dtype=torch.long)
        counts = torch.tensor(per_image, dtype=torch.long)
        text_image_ids = image_ids.repeat_interleave(counts)
        c = per_image[0]
        if "text_ids" in items[0]:  # real data: ids of the captions in their split
            text_ids = torch.tensor([i for item in items for i in item["text_ids"]], dtype=torch.long)
        elif all(n == c for n in per_image):
            text_ids = (image_ids[:, None] * c + torch.arange(c)[None, :]).reshape(-1)
        else:  # not produced by ShapesDataset; ids are then only unique within the batch
            text_ids = torch.arange(len(text_image_ids), dtype=torch.long)
        captions = [caption for item in items for caption in item["captions"]]
        return self._build(items, captions, text_image_ids, text_ids)
