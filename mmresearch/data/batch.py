"""Typed batches shared by every data source and every model family.

A batch is a dataclass of tensors, so Lightning moves it to the device as a whole
(``lightning_utilities.apply_to_collection`` understands dataclasses).

Shapes use: ``B`` images in the batch, ``T`` captions in the batch, ``L`` tokens per caption,
``K`` label kinds, ``Q`` questions per image.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List, Optional

import torch
from torch import Tensor


@dataclass
class ImageTextBatch:
    """Images and captions, with the ids that say which caption belongs to which image.

    In training each row is one (image, caption) pair, so ``T == B`` and ``text_image_ids ==
    image_ids``; two rows with the same image id are both positives of each other (several
    captions of one image). In evaluation each image comes once with all of its captions
    flattened, so ``T >= B`` and ``text_image_ids`` maps every caption to its image.

    Attributes:
        images: ``[B, 3, H, W]`` float images, already normalised for the image encoder.
        image_ids: ``[B]`` long, a dataset-wide id of each image (unique per image in a split).
        input_ids: ``[T, L]`` long token ids (padded).
        attention_mask: ``[T, L]`` long, 1 for real tokens and 0 for padding.
        text_image_ids: ``[T]`` long, the image id each caption describes.
        text_ids: ``[T]`` long, a dataset-wide id of each caption (unique per caption in a split).
        labels: ``[B, K]`` long class labels per image (kinds named by the data module), or None.
        neg_input_ids: ``[B, L]`` a hard-negative caption per image (one attribute changed or a
            relation swapped), or None.
        neg_attention_mask: ``[B, L]`` its mask, or None.
        neg_kinds: ``[B]`` long index of the kind of change of each hard negative, or None.
        neg_image_ids: ``[B]`` long id of an image of the split that the hard negative happens to
            describe (a positive of that image), -1 when none, or None.
        question_input_ids: ``[B, Q, L]`` questions about each image, or None.
        question_attention_mask: ``[B, Q, L]`` their mask, or None.
        answers: ``[B, Q]`` long index of the answer in the closed answer vocabulary, or None.
        skipped: real-data training batches only: ``{reason: [sample names]}`` of the samples
            left out of this batch (:mod:`mmresearch.data.skips`), else None.
    """

    images: Tensor
    image_ids: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    text_image_ids: Tensor
    text_ids: Optional[Tensor] = None
    labels: Optional[Tensor] = None
    neg_input_ids: Optional[Tensor] = None
    neg_attention_mask: Optional[Tensor] = None
    neg_kinds: Optional[Tensor] = None
    neg_image_ids: Optional[Tensor] = None
    question_input_ids: Optional[Tensor] = None
    question_attention_mask: Optional[Tensor] = None
    answers: Optional[Tensor] = None
    skipped: Optional[Dict[str, List[str]]] = None

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_texts(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def is_paired(self) -> bool:
        """True when row ``i`` of the images and row ``i`` of the captions form a pair."""
        return self.num_images == self.num_texts and bool(torch.equal(self.image_ids, self.text_image_ids))

    #: the batch's modalities by name: ``modality -> (input fields, id field)``. A tower of modality
    #: ``m`` is called with the input fields of ``m``; the id field groups its rows (rows of
    #: different modalities with the same id belong to one sample: contrastive positives).
    MODALITIES = {"image": (("images",), "image_ids"), "text": (("input_ids", "attention_mask"), "text_image_ids")}

    def inputs(self, modality: str) -> tuple:
        """The tower inputs of ``modality``: ``(images [B, 3, H, W],)`` or ``(input_ids [T, L], attention_mask [T, L])``."""
        return tuple(getattr(self, name) for name in self._modality(modality)[0])

    def ids(self, modality: str) -> Tensor:
        """``[N]`` the sample id of each row of ``modality`` (``image_ids``, ``text_image_ids``)."""
        return getattr(self, self._modality(modality)[1])

    def _modality(self, modality: str) -> tuple:
        if modality not in self.MODALITIES:
            raise KeyError(f"{type(self).__name__} carries the modalities {sorted(self.MODALITIES)}, not {modality!r}")
        return self.MODALITIES[modality]

    def first_pairs(self, n: int) -> "ImageTextBatch":
        """The first ``n`` rows of a paired (training) batch: every per-row field cut to ``n``."""
        if not self.is_paired:
            raise ValueError("first_pairs needs a paired batch (one caption per image, in the same order)")
        b = self.num_images
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor) and value.ndim and value.shape[0] == b:
                setattr(self, f.name, value[:n])
        return self

    def pin_memory(self) -> "ImageTextBatch":
        """Lets ``DataLoader(pin_memory=True)`` pin every tensor field."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                setattr(self, f.name, value.pin_memory())
        return self
