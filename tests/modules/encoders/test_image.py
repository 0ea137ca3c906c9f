import pytest
import torch

from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.utils.errors import ConfigError

TINY_RESNET = dict(channels=(8, 8, 16, 16), stem_width=8)


def test_flatten_pool_keeps_every_position():
    enc = TimmImageEncoder("resnet10t", img_size=64, pool="flatten", output="both", model_kwargs=TINY_RESNET)
    out = enc(torch.randn(3, 3, 64, 64))
    assert enc.output_dim == 16 * 2 * 2
    assert out.pooled.shape == (3, enc.output_dim)
    assert out.tokens.shape == (3, 4, 16)


def test_default_pool_and_tokens_of_a_vit():
    enc = TimmImageEncoder("test_vit", img_size=64, output="both", model_kwargs=dict(patch_size=8))
    out = enc(torch.randn(2, 3, 64, 64))
    assert out.pooled.shape == (2, enc.output_dim)
    assert out.tokens.shape[0] == 2 and out.tokens.shape[-1] == enc.token_dim
    assert out.tokens.shape[1] >= 64  # 8x8 patches (+ prefix tokens)


def test_pooled_only_returns_no_tokens():
    enc = TimmImageEncoder("resnet10t", img_size=32, model_kwargs=TINY_RESNET)
    assert enc(torch.randn(2, 3, 32, 32)).tokens is None


def test_freeze_stops_gradients_and_keeps_eval_mode():
    enc = TimmImageEncoder("resnet10t", img_size=32, freeze=True, model_kwargs=TINY_RESNET)
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.model.training


def test_unknown_name_lists_close_matches():
    with pytest.raises(ConfigError, match=r"image_encoder\.name='resnet1'.*resnet18"):
        TimmImageEncoder("resnet1")


def test_bad_model_kwargs_name_the_key():
    with pytest.raises(ConfigError, match="image_encoder.model_kwargs"):
        TimmImageEncoder("resnet10t", model_kwargs={"not_an_argument": 3})


def test_dropping_the_stem_pool_doubles_the_resolution():
    pooled = TimmImageEncoder("resnet10t", img_size=64, pool="flatten", output="both", model_kwargs=TINY_RESNET)
    full = TimmImageEncoder("resnet10t", img_size=64, pool="flatten", output="both", stem_pool=False, model_kwargs=TINY_RESNET)
    assert pooled.num_tokens == 4 and full.num_tokens == 16
    assert full(torch.randn(2, 3, 64, 64)).pooled.shape == (2, 16 * 16)
    with pytest.raises(ConfigError, match="stem_pool=false"):
        TimmImageEncoder("test_vit", img_size=64, stem_pool=False)
