"""Encoder ``compile``: options parsed from the config, applied in place at ``configure_model``,
state-dict keys unchanged, copies made before compilation keep their own weights."""

import copy
from functools import partial

import lightning as L
import pytest
import torch
from torch import nn

from mmresearch.data.datamodule import ShapesDataModule
from mmresearch.data.tokenizer import build_shapes_tokenizer
from mmresearch.models.dual_encoder import DualEncoder
from mmresearch.modules.encoders.compile import compile_encoders, compile_options, keep_eager
from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.modules.encoders.text import HFTextEncoder
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.losses import InfoNCELoss
from mmresearch.modules.temperature import LearnableTemperature
from mmresearch.utils.errors import ConfigError

TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40)
EAGER = {"backend": "eager"}  # dynamo tracing without code generation: fast, bit-identical


def test_compile_options_from_config_values():
    assert compile_options(False, "k") is None and compile_options(None, "k") is None
    assert compile_options(True, "k") == {}
    assert compile_options({"mode": "max-autotune", "dynamic": False}, "k") == {"mode": "max-autotune", "dynamic": False}
    with pytest.raises(ConfigError, match=r"image_encoder.compile has unknown torch.compile argument\(s\) \['modee'\]"):
        compile_options({"modee": "x"}, "image_encoder.compile")
    with pytest.raises(ConfigError, match="text_encoder.compile must be true, false or a mapping"):
        compile_options("yes", "text_encoder.compile")


class _Marked(nn.Linear):
    compile_options = EAGER


def test_compile_encoders_is_in_place_and_copies_keep_their_weights():
    torch.manual_seed(0)
    parent = nn.ModuleDict({"online": _Marked(4, 3), "plain": nn.Linear(4, 3)})
    parent["momentum"] = copy.deepcopy(parent["online"])  # like ALBEF's momentum copy, made before compiling
    with torch.no_grad():
        parent["momentum"].weight.add_(1.0)
    keys = list(parent.state_dict())
    assert compile_encoders(parent) == ["online", "momentum"]
    assert compile_encoders(parent) == []  # already compiled: not again
    assert list(parent.state_dict()) == keys  # no _orig_mod. prefix
    x = torch.randn(2, 4)
    for name in ("online", "momentum"):
        m = parent[name]
        assert m._compiled_call_impl is not None
        torch.testing.assert_close(m(x), x @ m.weight.T + m.bias, rtol=0, atol=0)
    assert parent["plain"]._compiled_call_impl is None


def test_keep_eager_clears_the_requests_before_compiling():
    parent = nn.ModuleDict({"a": _Marked(2, 2), "b": _Marked(2, 2)})
    parent["a"].compile_options = dict(EAGER)  # per instance, so the class default stays for "b"
    compile_encoders(nn.ModuleDict({"b": parent["b"]}))  # "b" already compiled: left as it is
    assert keep_eager(parent) == ["a"]
    assert compile_encoders(parent) == [] and parent["a"]._compiled_call_impl is None


def _model(tokenizer, compile):
    return DualEncoder.image_text(
        image_encoder=TimmImageEncoder("resnet10t", img_size=32, model_kwargs=dict(channels=(8, 8, 16, 16), stem_width=8), compile=compile),
        text_encoder=HFTextEncoder(config=TINY_BERT, vocab_size=len(tokenizer), compile=compile),
        image_head=partial(ProjectionHead, out_dim=16),
        text_head=partial(ProjectionHead, out_dim=16),
        loss=InfoNCELoss(),
        temperature=LearnableTemperature(init_tau=0.07),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )


def test_training_with_compiled_encoders_matches_eager():
    """Two steps with both towers compiled (dynamo, eager backend) give the same weights as without."""
    tokenizer = build_shapes_tokenizer()
    weights = []
    for compile in (False, EAGER):
        torch.manual_seed(0)
        model = _model(tokenizer, compile)
        data = ShapesDataModule(tokenizer=tokenizer, image_size=32, train_size=32, val_size=16, test_size=16, batch_size=16, eval_batch_size=16)
        trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, deterministic=True)
        trainer.fit(model, datamodule=data)
        compiled = [model.towers["image"].encoder._compiled_call_impl is not None, model.towers["text"].encoder._compiled_call_impl is not None]
        assert compiled == [bool(compile)] * 2
        weights.append(model.state_dict())
    assert list(weights[0]) == list(weights[1])
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-5, atol=1e-6, msg=key)
