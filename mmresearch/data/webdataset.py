"""Training pairs streamed from WebDataset tar shards (CC3M/LAION-style web data).

A shard is a tar file of samples that share a key: an image (``.jpg``, ``.jpeg``, ``.png`` or
``.webp``) and a caption (``.txt``, or ``.json`` with ``"caption"``: str or list, or
``"captions"``: list). Shards are read with the ``webdataset`` library's tar iterator.

Splitting: every epoch the shard list is shuffled with ``(seed, epoch)`` (the same order on every
rank); rank ``r`` of ``W`` takes shards ``r, r + W, ...`` and its ``k``-th DataLoader worker of
``K`` takes every ``K``-th of those. So no sample is read by two ranks or two workers, as long as
there are at least ``W * K`` shards (fewer is an error).

Epoch length: a stream has no length, so the source states ``num_samples``. Each rank trains
``num_samples // W // batch_size`` whole batches per epoch, split over its workers (each worker
yields a whole number of batches), so every rank trains the same number of batches, which DDP
needs, and ``len(loader)`` is exact. A worker whose shards run out before its
share starts over on them (a warning says so: the stated count is larger than the data).

Shuffling: a buffer of ``shuffle_buffer`` samples per worker (0: shard order), seeded by ``(seed,
epoch, rank, worker)``. Bad samples are :class:`~mmresearch.data.skips.Skipped` markers, counted by
the collate like those of map-style data. A shard that cannot be read, or a truncated one, gives
``unreadable_row`` markers for the samples it is expected to have lost (``num_samples / shards``
minus those read), and the stream goes on with the next shard.

Shard sizes are not known in advance, so every worker's share of an epoch is the same whatever
its shards hold: with shards of very unequal sizes, a worker whose shards run short reads them
again (a warning says so) while another stops before the end of its shards. Shards written by
``mmr-write-shards`` hold equal counts (except the last).

Not resumable mid-epoch: a run resumed from a mid-epoch checkpoint starts that epoch's stream again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from mmresearch.data.skips import DataError, Skipped
from mmresearch.utils.distributed import world_info

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSIONS = ("txt", "json")


def expand_urls(urls: Union[str, Sequence[str]]) -> List[str]:
    """Shard paths from a brace pattern (``shards/{00000..00009}.tar``), a ``::``-separated list,
    or a list of either (open_clip's ``--train-data`` syntax)."""
    import braceexpand

    items = [urls] if isinstance(urls, str) else list(urls)
    out: List[str] = []
    for item in items:
        for part in str(item).split("::"):
            out.extend(braceexpand.braceexpand(part))
    return out


def stable_id(*parts: str) -> int:
    """A 63-bit id from strings, the same in every process and run (image ids of stream samples)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_captions(sample: Dict[str, Any]) -> Union[List[str], Skipped, None]:
    """The captions of a shard sample (``.txt`` or ``.json``), None when it has no caption member."""
    name = f"{Path(str(sample.get('__url__', '?'))).name}:{sample.get('__key__', '?')}"
    for ext in CAPTION_EXTENSIONS:
        if ext not in sample:
            continue
        try:
            text = sample[ext].decode("utf-8")
            if ext == "txt":
                return [text]
            meta = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return Skipped("unreadable_row", name, f".{ext}: {type(err).__name__}")
        captions = meta.get("captions", meta.get("caption")) if isinstance(meta, dict) else None
        captions = [captions] if isinstance(captions, str) else captions
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            return Skipped("unreadable_row", name, ".json has no 'caption' string or 'captions' list")
        return captions
    return None


def decode_image(data: bytes, name: str) -> Union[Image.Image, Skipped]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return Skipped("corrupt_image", name, f"{type(err).__name__}: {err}"[:160])


class WebDatasetPairs(IterableDataset):
    """(image, caption) training pairs streamed from tar shards; see the module docstring.

    Args:
        urls: shard paths (brace pattern, ``::`` list, or a list).
        num_samples: samples per epoch over all ranks (the stated data size).
        transform: PIL RGB image -> float ``[3, S, S]``.
        shuffle_buffer: samples held for shuffling per worker (0: none).
        seed: base seed of the shard order, the buffer and caption choice.
        batch_size: samples per batch; each worker yields whole batches.
        rank, world_size: this process's place in DDP, taken in the main process (a worker
            started with spawn cannot ask torch.distributed); None: asked when iterating.

    Items: ``{"image", "image_id", "caption", "text_id"}`` (ids from the shard path as given in
    ``urls`` and the sample key, stable across runs) or a :class:`~mmresearch.data.skips.Skipped` marker.
    """

    def __init__(self, urls: Union[str, Sequence[str]], num_samples: int, transform: Callable, shuffle_buffer: int = 1000,
                 seed: int = 0, batch_size: int = 1, rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        self.shards = expand_urls(urls)
        if not self.shards:
            raise DataError(f"no WebDataset shards in {urls!r}")
        missing = [s for s in self.shards if "://" not in s and not Path(s).is_file()]
        if missing:
            raise DataError(f"{len(missing)} of {len(self.shards)} WebDataset shards do not exist, e.g. {missing[:3]}")
        if int(num_samples) < 1:
            raise ValueError(f"data.train.num_samples must be >= 1 (the samples of one epoch), got {num_samples!r}")
        self.num_samples = int(num_samples)
        self.transform = transform
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.rank, self.world_size = rank, world_size
        #: samples a shard is expected to hold: an unreadable shard counts as this many skipped
        self.expected_per_shard = -(-self.num_samples // len(self.shards))
        # shared with forked workers: the epoch a worker reads when its stream starts
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def batches_per_rank(self, world_size: int) -> int:
        return self.num_samples // world_size // self.batch_size

    def _place(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return int(self.rank), int(self.world_size)
        return world_info()

    def __len__(self) -> int:
        """Samples this rank yields per epoch (whole batches)."""
        return self.batches_per_rank(self._place()[1]) * self.batch_size

    def worker_plan(self, epoch: int, rank: int, world: int, worker: int, workers: int) -> tuple[List[str], int]:
        """The shards one worker reads in an epoch and how many samples it yields."""
        if len(self.shards) < world * workers:
            raise DataError(
                f"{len(self.shards)} WebDataset shards cannot be split over {world} ranks x {workers} workers without "
                f"reading some twice: write more shards, or lower data.num_workers"
            )
        order = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(len(self.shards))
        mine = [self.shards[i] for i in order[rank::world][worker::workers]]
        batches = self.batches_per_rank(world)
        return mine, (batches // workers + (1 if worker < batches % workers else 0)) * self.batch_size

    def __iter__(self) -> Iterator[Union[Dict[str, Any], Skipped]]:
        rank, world = self._place()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = int(self._epoch)
        shards, quota = self.worker_plan(epoch, rank, world, worker, workers)
        rng = np.random.default_rng([self.seed, epoch, rank, worker])
        produced = 0
        for round_ in range(1 << 30):
            if round_ == 1:
                log.warning("WebDataset: the shards of one worker ran out after %d samples, before its share (%d) of "
                            "data.train.num_samples (larger than the data, or shards of unequal sizes); it reads them "
                            "again (samples repeat within the epoch)", produced, quota)
            fresh = 0
            for sample in self._shuffled(self._samples(shards), rng):
                if produced == quota:
                    return
                fresh += 1
                produced += 1
                yield self._item(sample, rng)
            if produced == quota:
                return
            if fresh == 0:
                raise DataError(f"WebDataset shards {shards[:3]} hold no samples")

    def _samples(self, shards: List[str]) -> Iterator[Dict[str, Any]]:
        """Raw samples of the shards, one pass; a read error is an ``__error__`` sample."""
        from webdataset.tariterators import tarfile_samples

        errors: List[Exception] = []

        def keep(err: Exception) -> bool:
            errors.append(err)
            return True

        for shard in shards:
            read, failed = 0, False
            for sample in tarfile_samples([{"url": shard}], handler=keep):
                read += 1
                yield sample
                failed = failed or bool(errors)
                errors.clear()
            failed = failed or bool(errors)
            errors.clear()
            if failed:
                # the rest of the shard is lost: count the samples it should still have held (an
                # estimate, num_samples / shards), so a broken shard weighs in the skip limit
                # as much as the data it lost, and the quota is not filled up with repeats
                lost = max(1, self.expected_per_shard - read)
                for _ in range(lost):
                    yield {"__error__": f"unreadable after {read} samples (~{lost} samples lost)", "__url__": shard}

    def _shuffled(self, samples: Iterator[Dict[str, Any]], rng: np.random.Generator) -> Iterator[Dict[str, Any]]:
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: List[Dict[str, Any]] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = int(rng.integers(len(buffer)))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)  # the end of the pass: flush
        yield from buffer

    def _item(self, sample: Dict[str, Any], rng: np.random.Generator) -> Union[Dict[str, Any], Skipped]:
        shard = str(sample.get("__url__", "?"))
        url = Path(shard).name
        if "__error__" in sample:
            return Skipped("unreadable_row", url, str(sample["__error__"])[:160])
        key = str(sample.get("__key__", "?"))
        name = f"{url}:{key}"
        captions = sample_captions(sample)
        if isinstance(captions, Skipped):
            return captions
        image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
        if image_ext is None:
            return Skipped("missing_image", name, "no image member")
        if captions is None:
            return Skipped("unreadable_row", name, "no .txt or .json caption member")
        captions = [" ".join(c.split()) for c in captions]
        usable = [i for i, c in enumerate(captions) if c]
        if not usable:
            return Skipped("empty_caption", name)
        image = decode_image(sample[image_ext], name)
        if isinstance(image, Skipped):
            return image
        choice = usable[int(rng.integers(len(usable)))]
        # ids from the shard's path as configured, not only its file name: shards of two directories
        # (``a/shard-000000.tar::b/shard-000000.tar``) have the same names but different images
        image_id = stable_id(shard, key)
        return {"image": self.transform(image), "image_id": image_id, "caption": captions[choice], "text_id": stable_id(shard, key, str(choice))}


class EpochSignal:
    """Stands in for the sampler of a DataLoader over an iterable dataset, so that Lightning's
    ``set_epoch`` call at the start of every epoch reaches the dataset (it looks for ``set_epoch``
    on ``loader.batch_sampler.sampler``). Yields nothing useful: the dataset makes the samples."""

    def __init__(self, dataset: WebDatasetPairs, sampler) -> None:
        self.dataset = dataset
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        return iter(self.sampler)


def webdataset_loader(dataset: WebDatasetPairs, collate: Callable, num_workers: int, pin_memory: bool,
                      generator: Optional[torch.Generator] = None) -> torch.utils.data.DataLoader:
    """A DataLoader of ``dataset.batch_size`` batches over the stream; every rank gets the same
    number of batches, ``len(loader)``."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=dataset.batch_size, drop_last=True, collate_fn=collate, num_workers=num_workers,
                        pin_memory=pin_memory, persistent_workers=False, generator=generator)
    loader.batch_sampler.sampler = EpochSignal(dataset, loader.batch_sampler.sampler)
    return loader
