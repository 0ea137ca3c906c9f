"""``CaptionDataModule``: what every image-caption data module shares (loaders, tokenizer facts)."""

from __future__ import annotations

import os
from typing import Callable, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchdata.stateful_dataloader import StatefulDataLoader

from mmresearch.data.sampler import CaptionPairSampler


class CaptionDataModule(L.LightningDataModule):
    """Base of the data modules: subclasses set ``tokenizer``, ``batch_size``,
    ``eval_batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers`` and ``seed``, and
    implement ``dataset(split)`` and ``_eval_loader(split)``."""

    tokenizer = None
    batch_size: int
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    seed: int = 0

    @property
    def train_dataset(self):
        return self.dataset("train")

    @property
    def val_dataset(self):
        return self.dataset("val")

    @property
    def test_dataset(self):
        return self.dataset("test")

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def _loader_kwargs(self) -> dict:
        if self.num_workers > 0:
            # the collate tokenises in workers: keep the tokenizers library from forking its pool
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return dict(num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers)

    def _items_per_epoch(self, items: int) -> int:
        """Indices one training epoch consumes: whole batches, within ``trainer.limit_train_batches``."""
        batches = items // self.batch_size
        limit = getattr(self.trainer, "limit_train_batches", None) if self.trainer is not None else None
        if isinstance(limit, int):
            batches = min(batches, limit)
        elif isinstance(limit, float):
            batches = int(batches * limit)
        return batches * self.batch_size

    def _pair_loader(self, pairs: Dataset, sampler: CaptionPairSampler, collate: Callable, describe: str) -> StatefulDataLoader:
        """The training loader over (image, caption) pairs: resumable mid-epoch (Lightning keeps
        its position in checkpoints), seeded by its own generator so that building it leaves the
        global RNG streams alone. ``describe`` names the data in the too-small error."""
        if len(sampler) < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the {len(sampler)} training items per rank "
                f"({describe}); with drop_last=True the training loader would be empty"
            )
        sampler.items_per_epoch = self._items_per_epoch(len(sampler))
        sampler.set_epoch(self._fit_epoch())
        self._train_sampler: Optional[CaptionPairSampler] = sampler
        return StatefulDataLoader(
            pairs,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(self.seed),
            **self._loader_kwargs(),
        )

    def _fit_epoch(self) -> int:
        """The epoch the fit loop is about to train (the value it passes to ``set_epoch``).

        Lightning starts the training iterator before it calls ``set_epoch``; with workers the
        first indices are drawn at that moment. Setting the epoch when the loader is built
        makes a resumed run (or a reloaded loader) start from its epoch's order, not epoch 0's.
        A mid-epoch checkpoint's loader state still takes precedence."""
        trainer = getattr(self, "trainer", None)
        loop = getattr(trainer, "fit_loop", None) if trainer is not None else None
        return int(loop.epoch_progress.current.processed) if loop is not None else 0

    def _split_loader(self, split: str, collate: Callable, limit: Optional[int] = None) -> DataLoader:
        """An unshuffled loader of the first ``limit`` items (None: all) of a split's dataset."""
        dataset = self.dataset(split)
        if limit is not None and limit < len(dataset):
            dataset = Subset(dataset, range(int(limit)))
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, drop_last=False, collate_fn=collate,
                          **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
