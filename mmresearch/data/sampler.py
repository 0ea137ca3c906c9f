"""``CaptionPairSampler``: which (image, caption) pairs a training epoch visits, in which order,
on which DDP rank; resumable mid-epoch. Shared by the built-in and the real-data modules."""

from __future__ import annotations

import zlib
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler

CAPTION_SAMPLING = ("random", "all")


class CaptionPairSampler(DistributedSampler):
    """Indices of (image, caption) pairs, reshuffled every epoch, sharded across DDP ranks, and
    resumable mid-epoch.

    ``captions_per_image`` is either one count ``C`` for every image (pair index ``image * C +
    caption``, the built-in data) or one count per image (pair index ``offsets[image] + caption``
    with ``offsets`` the running sum of the counts, real data with 5 to 7 captions per image).

    ``mode="random"``: every image once per epoch, in random order, with one of its captions
    drawn at random; ``mode="all"``: every (image, caption) pair once per epoch. The order depends
    only on ``seed`` and the epoch. Lightning calls :meth:`set_epoch` before each epoch; without it
    the sampler counts its own epochs (0, 1, 2, ... one per ``iter``).

    Under DDP rank ``r`` of ``W`` takes items ``r, r + W, ...`` of the epoch's order, all ranks the
    same count (the last ``len % W`` items are dropped). It subclasses ``DistributedSampler`` so
    that Lightning does not wrap it in one (a wrapper would hide :meth:`set_epoch` and the state
    from it). :meth:`state_dict` / :meth:`load_state_dict` hold the epoch and how many indices were
    handed out, which ``StatefulDataLoader`` stores in checkpoints: a resumed run continues the same
    epoch's order where it stopped.
    """

    def __init__(self, num_images: int, captions_per_image: Union[int, Sequence[int]], mode: str = "random", seed: int = 0,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        # DistributedSampler.__init__ is not called: it wants a dataset and shuffles its own way.
        if mode not in CAPTION_SAMPLING:
            raise ValueError(f"data.caption_sampling must be one of {list(CAPTION_SAMPLING)}, got {mode!r}")
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = int(num_replicas if num_replicas is not None else (dist.get_world_size() if distributed else 1))
        self.rank = int(rank if rank is not None else (dist.get_rank() if distributed else 0))
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        self.num_images = num_images
        if isinstance(captions_per_image, (int, np.integer)):
            self.captions_per_image: Union[int, np.ndarray] = int(captions_per_image)
            self.num_pairs = num_images * self.captions_per_image
        else:
            counts = np.asarray(captions_per_image, dtype=np.int64)
            if counts.shape != (num_images,) or (counts < 1).any():
                raise ValueError(f"captions_per_image must be {num_images} counts >= 1, got shape {counts.shape}")
            self.captions_per_image = counts
            self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
            self.num_pairs = int(counts.sum())
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self._epoch_set = False
        self.items_per_epoch: Optional[int] = None  # indices an epoch really uses (drop_last, limit_train_batches)
        self._iter_epoch = 0  # epoch of the iteration in progress
        self._yielded = 0     # indices of that iteration handed out so far
        self._skip = 0        # indices to skip at the next iteration (after load_state_dict)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_set = True

    def indices(self, epoch: int) -> np.ndarray:
        """The whole epoch's order (all ranks)."""
        rng = np.random.default_rng([self.seed, zlib.crc32(b"caption-pairs"), epoch])
        c = self.captions_per_image
        if self.mode == "all":
            return rng.permutation(self.num_pairs)
        order = rng.permutation(self.num_images)
        if isinstance(c, int):
            captions = rng.integers(0, c, size=self.num_images)
            return order * c + captions[order]
        captions = (rng.random(self.num_images) * c).astype(np.int64)  # uniform in [0, count)
        return self.offsets[order] + captions[order]

    def __iter__(self) -> Iterator[int]:
        return self._iterate()

    def _iterate(self) -> Iterator[int]:
        # The epoch is read at the first index, not when the iterator is made: Lightning (and
        # StatefulDataLoader) make the iterator before they call set_epoch for that epoch.
        epoch = self.epoch
        if not self._epoch_set:
            self.epoch += 1
        self._epoch_set = False
        per_rank = len(self)
        mine = self.indices(epoch)[self.rank : per_rank * self.num_replicas : self.num_replicas].tolist()
        skip, self._skip = self._skip, 0
        self._iter_epoch, self._yielded = epoch, skip
        for i in mine[skip:]:
            self._yielded += 1
            yield i

    def __len__(self) -> int:
        total = self.num_pairs if self.mode == "all" else self.num_images
        return total // self.num_replicas

    def state_dict(self) -> dict:
        return {"epoch": self._iter_epoch, "yielded": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``state["yielded"]`` indices; a
        state taken after an epoch's last batch (``items_per_epoch`` used) continues with the
        start of the next epoch, which Lightning then trains from this same iterator."""
        epoch, yielded = int(state["epoch"]), int(state["yielded"])
        if self.items_per_epoch is not None and yielded >= self.items_per_epoch:
            epoch, yielded = epoch + 1, 0
        self.set_epoch(epoch)
        self._skip = yielded
