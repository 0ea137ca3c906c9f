"""The test metrics of the fused families (ViLT, ALBEF) under DDP (2 gloo processes) equal those of
one process: every key they log (fused and first-stage retrieval, ``pairs_scored``, ``itm_acc``,
``comp_acc*``, ``vqa_score``).

The test split has 25 images, so Lightning's ``DistributedSampler`` pads it to 26 by repeating
one image (with its captions, hard negative and questions) on the other rank. Each worker runs
``Trainer.test`` with ``devices=2`` in a process group it joined itself (Lightning sees
``LOCAL_RANK`` and does not start processes); the reference is ``Trainer.test`` on one process.
The workers are started with ``runpy.run_path`` on this very file (see ``tests/helpers.py``).
"""

from __future__ import annotations

import os

import pytest

from helpers import FAST, run_gloo_worker, spawn_workers

pytestmark = pytest.mark.slow

WORLD, TEST_IMAGES, BATCH = 2, 25, 4
WORKER_RUN_NAME = "__mmr_fused_eval_ddp_worker__"
DATA = [*FAST, f"data.test_size={TEST_IMAGES}", f"data.eval_batch_size={BATCH}", "model.objectives.vqa.weight=1", "model.retrieval.top_k=4"]
FAMILIES = {
    "vilt": ["experiment=vilt_shapes", "image_encoder.model_kwargs.embed_dim=32", "image_encoder.model_kwargs.depth=2",
             "image_encoder.model_kwargs.num_heads=2", "text_encoder.config.hidden_size=32", "model.embed_dim=16"],
    "albef": ["experiment=albef_shapes", "model.embed_dim=16", "model.fusion_layers=1"],
}


def _center_itm_scores(model, dm) -> None:
    """Shift the untrained ITM head's bias so that its match scores of a test batch's pairs
    straddle 0 (an untrained head scores every pair on one side: ``itm_acc`` would be 0.5
    whichever pairs are scored)."""
    import torch

    from mmresearch.evaluation.compositionality import caption_rows

    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        rows = caption_rows(batch.image_ids, batch.text_image_ids)
        scores = model.itm_head.score(model.fused_pooled(batch.images[rows], batch.input_ids, batch.attention_mask))
        model.itm_head.fc.bias[1] -= scores.median()


def tiny_test_metrics(family: str, devices: int) -> dict:
    """``Trainer.test`` of a freshly initialised (seed 0) tiny model of ``family`` on ``devices``
    processes: the logged metrics and the image ids each process evaluated."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.strategies import DDPStrategy

    from mmresearch.models.builder import build_model
    from mmresearch.train import CONFIG_DIR
    from mmresearch.utils.instantiate import build

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*DATA, *FAMILIES[family]])
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer, dm).eval()
    _center_itm_scores(model, dm)
    seen = []

    class Seen(L.Callback):
        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen.append(batch.image_ids.clone())

    strategy = DDPStrategy(process_group_backend="gloo") if devices > 1 else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[Seen()])
    trainer.test(model, datamodule=dm, verbose=False)
    return {"metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}, "seen": torch.cat(seen)}


def _rank_results(rank: int) -> dict:
    os.environ.update(LOCAL_RANK=str(rank), NODE_RANK="0")  # the processes exist: Lightning joins them
    return {family: tiny_test_metrics(family, WORLD) for family in FAMILIES}


def _worker(rank: int, port: int, out_dir: str) -> None:
    run_gloo_worker(rank, port, out_dir, WORLD, _rank_results)


if __name__ == WORKER_RUN_NAME:
    _worker(**globals()["WORKER_ARGS"])


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory):
    return spawn_workers(__file__, WORKER_RUN_NAME, WORLD, tmp_path_factory.mktemp("fused_eval_ddp"), timeout=300)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_ranks_log_the_metrics_of_one_process(dist_results, family):
    import torch

    seen = torch.cat([r[family]["seen"] for r in dist_results])
    assert seen.numel() == TEST_IMAGES + 1 and seen.unique().numel() == TEST_IMAGES  # the sampler repeated an image
    want = tiny_test_metrics(family, 1)["metrics"]
    for key in ("test/itm_acc", "test/vqa_score", "test/comp_acc", "test/t2i_R@1", "test/first_stage/t2i_R@1", "test/pairs_scored"):
        assert key in want, key
    for rank, result in enumerate(dist_results):
        got = result[family]["metrics"]
        assert set(got) == set(want), rank
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-6), f"rank {rank}: {key}"
