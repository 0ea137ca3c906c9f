"""DualEncoder passes the batches' hard-negative captions to every built-in loss; a loss that
cannot take them gets a warning and the batch without them."""

import dataclasses
import warnings

import pytest
import torch

from mmresearch.models.builder import build_model
from helpers import LOSS_NAMES
from mmresearch.modules.losses import InfoNCELoss
from mmresearch.utils.instantiate import build

from helpers import FAST


def _model_and_batch(compose_cfg, loss: str):
    cfg = compose_cfg([*FAST, f"loss={loss}", "data.train_negatives=true"])
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    dm.setup("fit")
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer, dm).eval()
    batch = next(iter(dm.train_dataloader()))
    assert batch.neg_input_ids is not None
    return model, batch


def _without_negatives(batch):
    return dataclasses.replace(batch, neg_input_ids=None, neg_attention_mask=None, neg_kinds=None, neg_image_ids=None)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_gets_the_hard_negatives(compose_cfg, monkeypatch, loss):
    model, batch = _model_and_batch(compose_cfg, loss)
    seen = {}
    compute = model.objectives["image_text"].loss.compute

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return compute(*args, **kwargs)

    monkeypatch.setattr(model.objectives["image_text"].loss, "compute", spy)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no "does not use them" warning
        model(batch)
        expected = model.embed_texts(batch.neg_input_ids, batch.neg_attention_mask)
    torch.testing.assert_close(seen["negatives"], expected)
    torch.testing.assert_close(seen["negative_ids"], batch.neg_image_ids)


def test_a_loss_without_support_is_warned_once_and_ignores_them(compose_cfg):
    model, batch = _model_and_batch(compose_cfg, "infonce")

    class PlainLoss(InfoNCELoss):
        supports_hard_negatives = False

    model.objectives["image_text"].loss = PlainLoss()
    with torch.no_grad():
        with pytest.warns(UserWarning, match="does not use them; they are ignored"):
            out = model(batch)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = model(batch)
        plain = model(_without_negatives(batch))
    torch.testing.assert_close(out["loss"], plain["loss"])
    torch.testing.assert_close(again["loss"], plain["loss"])
