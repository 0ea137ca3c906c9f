"""``RetrievalMetric`` under DDP (2 gloo processes) equals the single-process metric on the unique data.

The evaluation set has 7 images, so ``DistributedSampler`` pads it to 8 by repeating one image
(and, with it, its captions) on another rank. Each rank updates the metric with its shard in
batches; ``compute()`` gathers the states of both ranks and must drop the repeated rows by id.
The single-process reference, computed here, never sees a duplicate.

The workers are started with ``runpy.run_path`` on this very file (run under a private
``__name__``), as in ``tests/modules/losses/test_distributed_equivalence.py``.
"""

from __future__ import annotations


import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from mmresearch.evaluation.metric import RetrievalMetric
from mmresearch.evaluation.retrieval import retrieval_metrics

from helpers import run_gloo_worker, spawn_workers

pytestmark = pytest.mark.slow

WORLD = 2
N_IMAGES, DIM, BATCH = 7, 8, 2
CAPTIONS_PER_IMAGE = [1, 3, 2, 2, 3, 1, 2]  # uneven, as in COCO
SAMPLER_CASES = {"ordered": {"shuffle": False}, "shuffled": {"shuffle": True, "seed": 3}}
WORKER_RUN_NAME = "__mmr_retrieval_metric_dist_worker__"


def _dataset():
    """Image and caption embeddings with non-contiguous ids; captions are noisy copies of their image."""
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(N_IMAGES, DIM, generator=g), dim=-1)
    image_ids = 100 + 3 * torch.arange(N_IMAGES)
    caption_image = torch.repeat_interleave(torch.arange(N_IMAGES), torch.tensor(CAPTIONS_PER_IMAGE))
    txt = F.normalize(img[caption_image] + 0.9 * torch.randn(caption_image.numel(), DIM, generator=g), dim=-1)
    text_ids = 1000 + 7 * torch.arange(caption_image.numel())
    return img, image_ids, txt, caption_image, text_ids


def _shard(case: str, rank: int) -> list:
    """The image indices of ``rank``, padded by the sampler as DDP evaluation does."""
    return list(DistributedSampler(range(N_IMAGES), num_replicas=WORLD, rank=rank, **SAMPLER_CASES[case]))


def _update(metric: RetrievalMetric, images: list) -> None:
    """Feed ``images`` (indices into the dataset, repeats allowed) in batches, with their captions."""
    img, image_ids, txt, caption_image, text_ids = _dataset()
    for start in range(0, len(images), BATCH):
        idx = torch.tensor(images[start : start + BATCH])
        caps = torch.nonzero(torch.isin(caption_image, idx)).flatten()
        metric.update(img[idx], image_ids[idx], txt[caps], image_ids[caption_image[caps]], text_ids[caps])


def _rank_results(rank: int) -> dict:
    results = {}
    for case in SAMPLER_CASES:
        metric = RetrievalMetric(chunk_size=3)
        _update(metric, _shard(case, rank))
        results[case] = {"shard": _shard(case, rank), "metrics": metric.compute()}
    return results


def _worker(rank: int, port: int, out_dir: str) -> None:
    run_gloo_worker(rank, port, out_dir, WORLD, _rank_results)


if __name__ == WORKER_RUN_NAME:  # a spawned worker (see dist_results)
    _worker(**globals()["WORKER_ARGS"])


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory):
    """Spawn the 2 gloo workers once; returns the per-rank result dicts."""
    return spawn_workers(__file__, WORKER_RUN_NAME, WORLD, tmp_path_factory.mktemp("dist_retrieval_metric"))


def _single_process_metrics() -> dict:
    metric = RetrievalMetric(chunk_size=3)
    _update(metric, list(range(N_IMAGES)))
    return metric.compute()


@pytest.mark.parametrize("case", list(SAMPLER_CASES))
def test_world_size_two_equals_single_process_on_unique_data(dist_results, case):
    shards = [r[case]["shard"] for r in dist_results]
    # the padding really repeats an image (and its captions) on another rank
    seen = shards[0] + shards[1]
    assert len(seen) == 8 and sorted(set(seen)) == list(range(N_IMAGES))

    ref = _single_process_metrics()
    img, _, txt, caption_image, _ = _dataset()
    assert ref == pytest.approx(retrieval_metrics(img, txt, caption_image), abs=1e-12)
    for rank, result in enumerate(dist_results):
        got = result[case]["metrics"]
        assert set(got) == set(ref)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-12), f"rank {rank}, {key}"

    # counting the repeated image twice would change the metrics: the comparison is sensitive
    repeated = torch.tensor(seen)
    caps = torch.cat([torch.nonzero(caption_image == i).flatten() for i in seen])
    rows = torch.cat([torch.full((CAPTIONS_PER_IMAGE[i],), n) for n, i in enumerate(seen)])
    with_duplicates = retrieval_metrics(img[repeated], txt[caps], rows)
    assert any(abs(with_duplicates[k] - ref[k]) > 1e-3 for k in ref)
