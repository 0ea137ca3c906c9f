"""Activation checkpointing of both towers (``grad_checkpointing``): switched on in the backbone,
and the same outputs and gradients as without it."""

import pytest
import torch

from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.modules.encoders.text import HFTextEncoder

TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _outputs_and_grads(encoder, inputs):
    encoder.train()
    encoder.zero_grad(set_to_none=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = encoder(*inputs).pooled
    encoder.saved_for_backward = sum(saved)  # activations kept for backward (checkpointed blocks keep none)
    (out ** 2).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


def _same(build, inputs):
    torch.manual_seed(0)
    plain = build(False)
    torch.manual_seed(0)
    checkpointed = build(True)
    out_a, grads_a = _outputs_and_grads(plain, inputs)
    out_b, grads_b = _outputs_and_grads(checkpointed, inputs)
    torch.testing.assert_close(out_b, out_a)
    assert checkpointed.saved_for_backward < 0.8 * plain.saved_for_backward  # it really drops activations
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-6, msg=name)
    return checkpointed


@pytest.mark.parametrize("name,kwargs", [("resnet10t", dict(channels=(8, 8, 16, 16), stem_width=8)), ("test_vit", dict(patch_size=8))])
def test_image_tower(name, kwargs):
    images = torch.randn(3, 3, 32, 32)
    enc = _same(lambda on: TimmImageEncoder(name, img_size=32, model_kwargs=kwargs, grad_checkpointing=on), (images,))
    assert enc.model.grad_checkpointing is True


def test_text_tower():
    ids = torch.randint(5, 100, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    enc = _same(lambda on: HFTextEncoder(config=TINY_BERT, vocab_size=100, grad_checkpointing=on), (ids, mask))
    assert enc.model.is_activation_checkpointing
