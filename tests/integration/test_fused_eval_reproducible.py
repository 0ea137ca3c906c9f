"""A fused model's evaluation is a function of checkpoint and data: training's test and two
``mmr-eval`` calls on its checkpoint report the same value for every key (``itm_acc`` included,
whose unmatched pairs were once drawn from the global RNG)."""

import json

import pytest
import torch

from mmresearch.evaluation.compositionality import caption_rows
from mmresearch.models.builder import build_model
from mmresearch.utils.instantiate import build

from helpers import FAST, REPO, run_cli, train_once

pytestmark = pytest.mark.slow

TINY_VILT = [*FAST, "experiment=vilt_shapes", "image_encoder.model_kwargs.embed_dim=64", "image_encoder.model_kwargs.depth=2",
             "text_encoder.config.hidden_size=64", "data.test_size=48", "data.val_size=32"]


def _centred_weights(compose_cfg, path):
    """Initial weights whose ITM head scores the test split's matched pairs on both sides of 0
    (after a few steps every pair still scores on one side: ``itm_acc`` would be 0.5 whichever
    pairs are scored, and the comparison blind)."""
    cfg = compose_cfg(TINY_VILT)
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer, dm).eval()
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    rows = caption_rows(batch.image_ids, batch.text_image_ids)
    with torch.no_grad():
        scores = model.itm_head.score(model.fused_pooled(batch.images[rows], batch.input_ids, batch.attention_mask))
        model.itm_head.fc.bias[1] -= scores.quantile(0.3)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def test_training_test_and_two_mmr_eval_calls_agree_on_every_key(compose_cfg, tmp_path):
    weights = _centred_weights(compose_cfg, tmp_path / "centred.ckpt")
    # lr 1e-9: the run's checkpoint holds (almost exactly) the centred weights
    run_dir = train_once(tmp_path / "train", [*TINY_VILT, f"model.init_from={weights}", "optimizer.lr=1e-9", "trainer.limit_train_batches=1"])
    want = {k: v for k, v in json.loads((run_dir / "results.json").read_text())["metrics"].items() if k.startswith("test/")}
    assert 0.0 < want["test/itm_acc"] != 0.5 and "test/vqa_score" not in want
    for n in range(2):
        out = tmp_path / f"eval{n}"
        proc = run_cli([f"ckpt_path={run_dir}", f"hydra.run.dir={out}", "trainer.enable_progress_bar=false", "num_threads=1"], cwd=REPO,
                       module="mmresearch.eval")
        assert proc.returncode == 0, proc.stderr[-6000:]
        got = json.loads((out / "results.json").read_text())["metrics"]
        assert got == want, {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
