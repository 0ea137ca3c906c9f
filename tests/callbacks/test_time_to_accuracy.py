"""TimeToAccuracy: checks after each epoch, the value equals the test loop's metric on the same
weights, stops at the target, writes its record."""

import json
from functools import partial

import lightning as L
import pytest
import torch

from mmresearch.callbacks.time_to_accuracy import TimeToAccuracy
from mmresearch.data.datamodule import ShapesDataModule
from mmresearch.data.tokenizer import build_shapes_tokenizer
from mmresearch.models.dual_encoder import DualEncoder
from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.modules.encoders.text import HFTextEncoder
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.losses import InfoNCELoss
from mmresearch.modules.temperature import LearnableTemperature
from mmresearch.utils.errors import ConfigError

TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40)


def _fit(tmp_path, callback, epochs=3, ckpt_path=None, checkpoints=False):
    torch.manual_seed(0)
    tokenizer = build_shapes_tokenizer()
    model = DualEncoder.image_text(
        image_encoder=TimmImageEncoder("resnet10t", img_size=32, model_kwargs=dict(channels=(8, 8, 16, 16), stem_width=8)),
        text_encoder=HFTextEncoder(config=TINY_BERT, vocab_size=len(tokenizer)),
        image_head=partial(ProjectionHead, out_dim=16), text_head=partial(ProjectionHead, out_dim=16),
        loss=InfoNCELoss(), temperature=LearnableTemperature(init_tau=0.07), optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    data = ShapesDataModule(tokenizer=tokenizer, image_size=32, train_size=32, val_size=16, test_size=24, batch_size=16, eval_batch_size=8)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=checkpoints, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[callback],
                        default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer, model, data


def test_stops_at_the_target_with_the_test_loops_value(tmp_path):
    callback = TimeToAccuracy(metric="t2i_R@1", target=0.0)
    trainer, model, data = _fit(tmp_path, callback)
    assert trainer.current_epoch == 1 and trainer.global_step == 2  # stopped after the first epoch (2 batches)
    assert callback.reached is callback.checks[0] and callback.reached["epoch"] == 1
    assert callback.reached["train_seconds"] > 0 and callback.reached["eval_seconds"] > 0
    tested = trainer.test(model, datamodule=data, verbose=False)[0]
    assert callback.reached["t2i_R@1"] == pytest.approx(tested["test/t2i_R@1"], abs=1e-6)  # logged as float32
    record = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    assert record["train_seconds_to_target"] == callback.reached["train_seconds"] and record["target"] == 0.0


def test_unreached_target_checks_every_epoch(tmp_path):
    callback = TimeToAccuracy(metric="rsum", target=7.0, split="val")
    trainer, _, _ = _fit(tmp_path, callback, epochs=2)
    assert trainer.global_step == 4 and callback.reached is None
    assert [c["epoch"] for c in callback.checks] == [1, 2]
    times = [c["train_seconds"] for c in callback.checks]
    assert 0 < times[0] < times[1]
    assert json.loads((tmp_path / "time_to_accuracy.json").read_text())["train_seconds_to_target"] is None


def test_bad_options_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="callbacks.time_to_accuracy.split"):
        TimeToAccuracy(split="train")
    with pytest.raises(ConfigError, match="callbacks.time_to_accuracy.metric='R@1' is not a retrieval metric"):
        _fit(tmp_path, TimeToAccuracy(metric="R@1"), epochs=1)


def test_resumed_run_continues_the_clock_and_the_checks(tmp_path):
    first = TimeToAccuracy(metric="rsum", target=7.0, split="val")
    trainer, _, _ = _fit(tmp_path, first, epochs=1, checkpoints=True)
    ckpt = trainer.checkpoint_callback.best_model_path
    saved = first.checks[0]["train_seconds"]

    resumed = TimeToAccuracy(metric="rsum", target=7.0, split="val")  # a new process: state from the checkpoint
    trainer, _, _ = _fit(tmp_path, resumed, epochs=2, ckpt_path=ckpt, checkpoints=True)
    assert trainer.global_step == 4
    assert [c["epoch"] for c in resumed.checks] == [1, 2]
    assert resumed.checks[0] == first.checks[0]
    assert resumed.checks[1]["train_seconds"] > saved  # the clock went on from the checkpoint's time
    record = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    assert [c["epoch"] for c in record["checks"]] == [1, 2]
