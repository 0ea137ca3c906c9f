"""DualEncoder: training moves the parameters, clamps the temperature, guards against NaN."""

from functools import partial

import lightning as L
import pytest
import torch
from torch import nn

from mmresearch.data.datamodule import ShapesDataModule
from mmresearch.data.tokenizer import build_shapes_tokenizer
from mmresearch.models.base import NonFiniteLossError
from mmresearch.models.dual_encoder import DualEncoder
from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.modules.encoders.text import HFTextEncoder
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.losses import InfoNCELoss
from mmresearch.modules.temperature import LearnableTemperature
from mmresearch.optim.schedulers import cosine_with_warmup
from mmresearch.utils.errors import ConfigError

TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40)


@pytest.fixture(scope="module")
def tokenizer():
    return build_shapes_tokenizer()


def _model(tokenizer, loss=None, lr=1e-3, max_logit_scale=100.0, head=None):
    return DualEncoder.image_text(
        image_encoder=TimmImageEncoder("resnet10t", img_size=32, pool="flatten", model_kwargs=dict(channels=(8, 8, 16, 16), stem_width=8)),
        text_encoder=HFTextEncoder(config=TINY_BERT, vocab_size=len(tokenizer)),
        image_head=head or partial(ProjectionHead, out_dim=16),
        text_head=partial(ProjectionHead, out_dim=16),
        loss=loss or InfoNCELoss(),
        temperature=LearnableTemperature(init_tau=0.07, max_logit_scale=max_logit_scale),
        optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.1),
        scheduler=partial(cosine_with_warmup, warmup_ratio=0.5),
    )


def _data(tokenizer):
    return ShapesDataModule(tokenizer=tokenizer, image_size=32, train_size=96, val_size=32, test_size=32, batch_size=16, eval_batch_size=32)


def _trainer(steps=3):
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)


def test_training_moves_parameters_and_clamps_temperature(tokenizer):
    model = _model(tokenizer, lr=0.5, max_logit_scale=15.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _trainer().fit(model, datamodule=_data(tokenizer))
    moved = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert any(n.startswith("towers.image.encoder") for n in moved) and any(n.startswith("towers.text.encoder") for n in moved)
    assert "objectives.image_text.temperature.log_logit_scale" in moved
    assert float(model.temperature()) <= 15.0 + 1e-4  # clamped after the step, like CLIP


def test_no_weight_decay_on_norms_biases_and_temperature(tokenizer):
    model = _model(tokenizer)
    trainer = _trainer(1)
    trainer.fit(model, datamodule=_data(tokenizer))
    groups = trainer.optimizers[0].param_groups
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert id(model.temperature.log_logit_scale) not in decay
    assert all(names[i].endswith("weight") and p.ndim >= 2 for g in groups if g["weight_decay"] > 0 for p in g["params"] for i in [id(p)])
    assert any(n.endswith("bias") for i, n in names.items() if i not in decay)


class _NaNLoss(nn.Module):
    def forward(self, image_features, text_features, logit_scale, image_ids=None, text_image_ids=None):
        value = (image_features * text_features).sum() * float("nan")
        return {"loss": value, "loss_i2t": value.detach(), "loss_t2i": torch.tensor(0.5)}


def test_non_finite_loss_stops_with_step_and_terms(tokenizer):
    with pytest.raises(NonFiniteLossError, match=r"global step 0 .*image_text=nan.*image_text_loss_t2i=0\.5.*loss=nan"):
        _trainer().fit(_model(tokenizer, loss=_NaNLoss()), datamodule=_data(tokenizer))


def test_mismatched_head_width_names_the_key(tokenizer):
    with pytest.raises(ConfigError, match=r"model\.towers\.image\.head\.in_dim=7 but model\.towers\.image\.encoder outputs width"):
        _model(tokenizer, head=ProjectionHead(in_dim=7, out_dim=16))
    with pytest.raises(ConfigError, match=r"model\.towers\.image\.head\.out_dim=8 and model\.towers\.text\.head\.out_dim=16"):
        _model(tokenizer, head=partial(ProjectionHead, out_dim=8))
