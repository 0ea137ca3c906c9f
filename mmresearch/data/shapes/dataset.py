"""``ShapesDataset``: one split of the procedural image-caption dataset, generated in memory.

Everything is a pure function of ``(seed, split, size, settings)``: the split's random streams come
from ``SeedSequence([seed, crc32(split)])``, one independent stream each for scenes, captions, hard
negatives and questions, so e.g. changing ``captions_per_image`` does not change the images.
"""

from __future__ import annotations

import random
import time
import zlib
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmresearch.data.shapes.captions import generate_captions, random_caption
from mmresearch.data.shapes.render import render_scenes
from mmresearch.data.shapes.scene import (
    LABEL_NAMES,
    NEG_KIND_NAMES,
    Scene,
    class_names,
    describe,
    hard_negative,
    sample_questions,
    sample_scenes,
    scene_labels,
)
from mmresearch.data.shapes.vocabulary import ShapesVocab


def split_seed(seed: int, split: str) -> list[int]:
    """Entropy of a split's random streams (stable across processes and Python versions)."""
    return [int(seed), zlib.crc32(split.encode("utf-8"))]


class ShapesDataset(Dataset):
    """One split of shapes scenes with images, captions, labels, hard negatives and QA.

    Attributes (``N`` images, ``C`` captions per image, ``Q`` questions per image):
        images: uint8 ``[N, 3, H, W]``.
        scenes: the ``N`` :class:`~mmresearch.data.shapes.scene.Scene` objects.
        captions: ``N`` lists of ``C`` strings (pairwise distinct within an image).
        descriptions: ``N`` canonical descriptions (pairwise distinct when ``unique_scenes``).
        scene_ids: long ``[N]``, the index of the first image with the same canonical description
            (``arange(N)`` when ``unique_scenes``). It is the ``image_id`` of an item, so renders
            of one scene and all their captions are positives of each other in the losses.
        labels: long ``[N, K]``, columns :data:`LABEL_NAMES` (primary shape, primary colour, count-1).
        neg_captions / neg_descriptions: ``N`` hard-negative captions and their canonical form.
        neg_kinds: long ``[N]`` index into :data:`NEG_KIND_NAMES`.
        neg_image_ids: long ``[N]``, the scene id of another image of the split that the hard
            negative describes (it is then a positive of that image), else -1.
        negatives / negative_kinds / negative_image_ids: ``negatives_per_image`` (``K``) hard
            negatives per image (``N`` lists of ``K`` strings, long ``[N, K]``, long ``[N, K]``);
            the ``neg_*`` attributes are their first column. Training pairs use negative
            ``caption index % K``, so a new caption draw each epoch also brings another negative.
        questions: ``N`` lists of ``Q`` strings; answers: long ``[N, Q]`` into :attr:`answer_vocab`.

    ``dataset[i]`` is a plain dict: ``image`` (uint8 ``[3, H, W]``), ``image_id`` (the scene id),
    ``captions``,
    ``labels``, ``neg_caption``, ``neg_kind``, ``questions``, ``answers``.
    """

    label_names = LABEL_NAMES
    neg_kind_names = NEG_KIND_NAMES

    def __init__(
        self,
        size: int,
        split: str = "train",
        seed: int = 0,
        image_size: int = 64,
        captions_per_image: int = 5,
        questions_per_image: int = 3,
        vocab: Optional[ShapesVocab] = None,
        count_weights: Sequence[float] = (1.0, 1.0, 1.0),
        unique_scenes: bool = True,
        negatives_per_image: int = 1,
    ) -> None:
        if captions_per_image < 1:
            raise ValueError(f"data.captions_per_image must be >= 1, got {captions_per_image}")
        if questions_per_image < 0:
            raise ValueError(f"data.questions_per_image must be >= 0, got {questions_per_image}")
        if negatives_per_image < 1:
            raise ValueError(f"data.negatives_per_image must be >= 1, got {negatives_per_image}")
        if size < 0:
            raise ValueError(f"data.{split}_size must be >= 0, got {size}")
        self.split = split
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.captions_per_image = int(captions_per_image)
        self.questions_per_image = int(questions_per_image)
        self.vocab = vocab if vocab is not None else ShapesVocab()
        self.count_weights = tuple(float(w) for w in count_weights)

        start = time.perf_counter()
        entropy = split_seed(self.seed, split)
        streams = np.random.SeedSequence(entropy).spawn(4)  # scenes, captions, negatives, questions
        self.unique_scenes = bool(unique_scenes)
        self.scenes: list[Scene] = sample_scenes(
            size, self.vocab, self.count_weights, streams[0], split=split, unique=self.unique_scenes
        )
        self.images = torch.from_numpy(render_scenes(self.scenes, self.image_size, channels_last=False))
        caption_rng, neg_rng, qa_rng = (random.Random(int(s.generate_state(1)[0])) for s in streams[1:])

        self.descriptions = [describe(s) for s in self.scenes]
        first: dict[str, int] = {}
        self.scene_ids = torch.tensor([first.setdefault(d, i) for i, d in enumerate(self.descriptions)], dtype=torch.long)
        self.captions = [generate_captions(s, self.captions_per_image, caption_rng) for s in self.scenes]
        self.negatives_per_image = int(negatives_per_image)
        self.negatives: list[list[str]] = []
        self.negative_descriptions: list[list[str]] = []
        kinds = []
        for scene in self.scenes:
            captions, descriptions, scene_kinds = [], [], []
            for _ in range(self.negatives_per_image):
                kind, negative = hard_negative(scene, self.vocab, neg_rng)
                scene_kinds.append(NEG_KIND_NAMES.index(kind))
                captions.append(random_caption(negative, neg_rng))
                descriptions.append(describe(negative))
            self.negatives.append(captions)
            self.negative_descriptions.append(descriptions)
            kinds.append(scene_kinds)
        self.negative_kinds = torch.tensor(kinds, dtype=torch.long).reshape(size, self.negatives_per_image)
        # the image id (scene id) a hard negative happens to describe in this split, else -1
        self.negative_image_ids = torch.tensor(
            [[first.get(d, -1) for d in ds] for ds in self.negative_descriptions], dtype=torch.long
        ).reshape(size, self.negatives_per_image)
        # the first negative of each image is "the" hard negative (evaluation, probes)
        self.neg_captions = [n[0] for n in self.negatives]
        self.neg_descriptions = [d[0] for d in self.negative_descriptions]
        self.neg_kinds = self.negative_kinds[:, 0].contiguous()
        self.neg_image_ids = self.negative_image_ids[:, 0].contiguous()
        answer_index = {a: i for i, a in enumerate(self.answer_vocab)}
        self.questions: list[list[str]] = []
        answers = []
        for scene in self.scenes:
            qa = sample_questions(scene, self.vocab, self.questions_per_image, qa_rng)
            self.questions.append([q.question for q in qa])
            answers.append([answer_index[q.answer] for q in qa])
        self.answers = torch.tensor(answers, dtype=torch.long).reshape(size, self.questions_per_image)
        self.labels = torch.tensor([scene_labels(s, self.vocab) for s in self.scenes], dtype=torch.long).reshape(
            size, len(LABEL_NAMES)
        )
        self.generation_seconds = time.perf_counter() - start

    # ------------------------------------------------------------------------------------------

    @property
    def answer_vocab(self) -> tuple[str, ...]:
        return self.vocab.answer_vocab

    @property
    def class_names(self) -> dict[str, list[str]]:
        return class_names(self.vocab)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.images[index],
            "image_id": int(self.scene_ids[index]),
            "captions": self.captions[index],
            "labels": self.labels[index],
            "neg_caption": self.neg_captions[index],
            "neg_kind": int(self.neg_kinds[index]),
            "neg_image_id": int(self.neg_image_ids[index]),
            "questions": self.questions[index],
            "answers": self.answers[index],
        }

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, size={len(self)}, image_size={self.image_size}, "
            f"captions_per_image={self.captions_per_image}, seed={self.seed})"
        )


class CaptionPairDataset(Dataset):
    """(image, caption) pairs of a :class:`ShapesDataset`: item ``p`` is caption ``p % C`` of image
    ``p // C`` (``C`` captions per image); its ``text_id`` is ``p``. A sampler picks which pairs."""

    def __init__(self, dataset: ShapesDataset) -> None:
        self.dataset = dataset
        self.captions_per_image = dataset.captions_per_image

    def __len__(self) -> int:
        return len(self.dataset) * self.captions_per_image

    def __getitem__(self, index: int) -> dict:
        image, caption = divmod(int(index), self.captions_per_image)
        item = self.dataset[image]
        item["caption"] = item["captions"][caption]
        item["text_id"] = int(index)
        k = caption % self.dataset.negatives_per_image
        if k:
            item["neg_caption"] = self.dataset.negatives[image][k]
            item["neg_kind"] = int(self.dataset.negative_kinds[image, k])
            item["neg_image_id"] = int(self.dataset.negative_image_ids[image, k])
        return item
