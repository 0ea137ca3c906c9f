"""ALBEF under DDP (2 gloo processes): the queues stay identical on every rank without being
broadcast, hold the momentum features of both ranks' batches, and ITM negatives are drawn from
the batch of every rank.

Each worker builds the same tiny model (same seed), wraps it in ``DistributedDataParallel`` (which
ignores the momentum model and queue, see ``ALBEF._ddp_params_and_buffers_to_ignore``), trains 3
steps on its own batches and returns its queue, momentum state and the negatives it drew.
"""

from __future__ import annotations

import pytest
import torch

from helpers import FAST, run_gloo_worker, spawn_workers

pytestmark = pytest.mark.slow

WORLD, STEPS, BATCH = 2, 3, 16
WORKER_RUN_NAME = "__mmr_albef_ddp_worker__"


def _rank_results(rank: int) -> dict:
    from hydra import compose, initialize_config_dir
    from torch.nn.parallel import DistributedDataParallel

    import mmresearch.modules.objectives.itm as albef  # the ITM objective draws the negatives
    from mmresearch.models.builder import build_model
    from mmresearch.train import CONFIG_DIR
    from mmresearch.utils.instantiate import build

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*FAST, "experiment=albef_shapes", "model.queue_size=80", "model.embed_dim=32", f"data.batch_size={BATCH}"])
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    dm.setup("fit")
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer, dm)
    model.train()
    drawn = []
    sample = albef.sample_negative_partners

    def recording(*args, **kwargs):
        picked = sample(*args, **kwargs)
        drawn.append((picked.clone(), kwargs["column_ids"].clone()))
        return picked

    albef.sample_negative_partners = recording
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batches = iter(dm.train_dataloader())
    seen = []
    for step in range(STEPS * WORLD):
        batch = next(batches)
        if step % WORLD != rank:
            continue  # each rank trains on its own batches
        seen.append(batch.image_ids.clone())
        ddp(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        model.momentum.update(model._momentum_sources())
    return {
        "queue": {k: v.clone() for k, v in model.queue.state_dict().items()},
        # parameters: BatchNorm running statistics differ per rank after a step, online and
        # momentum alike, until DDP broadcasts rank 0's at the next forward
        "momentum": {k: v.detach().clone() for k, v in model.momentum.named_parameters()},
        "online": model.text_proj.proj[-1].weight.detach().clone(),
        "seen": seen,
        "drawn": drawn,
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    run_gloo_worker(rank, port, out_dir, WORLD, _rank_results)


if __name__ == WORKER_RUN_NAME:
    _worker(**globals()["WORKER_ARGS"])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return spawn_workers(__file__, WORKER_RUN_NAME, WORLD, tmp_path_factory.mktemp("albef_ddp"), timeout=300)


def test_queues_are_identical_across_ranks_and_hold_every_ranks_features(results):
    first, second = results
    for key in first["queue"]:
        assert torch.equal(first["queue"][key], second["queue"][key]), key
    # every step enqueues rank 0's batch then rank 1's: 3 steps x 2 x 16 rows = 96 > 80, so it wrapped
    expected = torch.cat([torch.cat([first["seen"][s], second["seen"][s]]) for s in range(STEPS)])[-80:]
    ids, ptr = first["queue"]["ids"], int(first["queue"]["ptr"])
    assert ptr == 96 % 80 and int(first["queue"]["filled"]) == 80
    assert torch.equal(torch.cat([ids[ptr:], ids[:ptr]]), expected)


def test_momentum_and_online_models_stay_in_sync(results):
    first, second = results
    assert torch.equal(first["online"], second["online"])  # DDP averaged the gradients
    for key in first["momentum"]:
        assert torch.equal(first["momentum"][key], second["momentum"][key]), key


def test_itm_negatives_are_drawn_from_both_ranks_and_never_positives(results):
    for rank, result in enumerate(results):
        from_other_rank = 0
        for step, (picked, column_ids) in enumerate(result["drawn"]):
            rows = result["seen"][step // 2]  # two draws per step: a text per image, an image per text
            assert column_ids.numel() == WORLD * BATCH
            valid = picked >= 0
            assert (column_ids[picked[valid]] != rows[valid]).all()
            own = range(rank * BATCH, (rank + 1) * BATCH)
            from_other_rank += sum(int(p) not in own for p in picked[valid])
        assert from_other_rank > 0, f"rank {rank} never drew a negative from the other rank"
