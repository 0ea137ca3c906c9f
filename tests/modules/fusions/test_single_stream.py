"""The single-stream encoder: token sequence layout, masks, position interpolation, patch sampling."""

import pytest
import torch

from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.modules.encoders.text import HFTextEncoder
from mmresearch.modules.fusions.single_stream import SingleStreamEncoder
from mmresearch.utils.errors import ConfigError

VOCAB = 50


def _encoder(max_image_tokens=None, text_hidden=64):
    torch.manual_seed(0)
    image = TimmImageEncoder("test_vit", img_size=32, model_kwargs={"patch_size": 8})  # 4x4 patches, dim 64
    text = HFTextEncoder(
        config=dict(model_type="bert", hidden_size=text_hidden, num_hidden_layers=0, num_attention_heads=2, intermediate_size=64, max_position_embeddings=16),
        vocab_size=VOCAB,
    )
    return SingleStreamEncoder(image, text, max_image_tokens=max_image_tokens), image


def test_sequence_layout_and_shapes():
    enc, image = _encoder()
    enc.eval()
    ids = torch.randint(5, VOCAB, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    out = enc(torch.randn(2, 3, 32, 32), ids, mask)
    assert out.text_tokens.shape == (2, 7, 64)
    assert out.image_tokens.shape == (2, 1 + 16, 64)  # image [CLS] + 4x4 patches
    assert out.pooled.shape == (2, 64)
    assert out.mask.shape == (2, 7 + 17) and bool((out.mask == 1).all())
    assert enc.blocks is image.model.blocks  # the ViT's blocks (ViT weights can initialise them)


def test_text_padding_is_masked_out():
    enc, _ = _encoder()
    enc.eval()
    images = torch.randn(1, 3, 32, 32)
    ids = torch.randint(5, VOCAB, (1, 8))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    other = ids.clone()
    other[0, 5:] = torch.randint(5, VOCAB, (3,))  # change only the padded positions
    a, b = enc(images, ids, mask), enc(images, other, mask)
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5)
    assert torch.allclose(a.image_tokens, b.image_tokens, atol=1e-5)


def test_modality_type_embeddings_differ_for_text_and_image():
    enc, _ = _encoder()
    enc.eval()  # no embedding dropout
    assert not torch.equal(enc.modality_type.weight[0], enc.modality_type.weight[1])
    emb_t = enc.embed_text(torch.tensor([[1, 2]]))
    enc.modality_type.weight.data[0] += 1.0
    assert torch.allclose(enc.embed_text(torch.tensor([[1, 2]])), emb_t + 1.0, atol=1e-6)


def test_positions_interpolate_to_other_image_sizes():
    enc, _ = _encoder()
    enc.eval()
    out = enc(torch.randn(1, 3, 48, 40), torch.randint(5, VOCAB, (1, 4)), torch.ones(1, 4, dtype=torch.long))
    assert out.image_tokens.shape[1] == 1 + 6 * 5
    with pytest.raises(ValueError, match="multiple of the patch size"):
        enc(torch.randn(1, 3, 30, 32), torch.randint(5, VOCAB, (1, 4)), torch.ones(1, 4, dtype=torch.long))


def test_patch_cap_in_training_only():
    enc, _ = _encoder(max_image_tokens=5)
    images = torch.randn(2, 3, 32, 32)
    enc.train()
    assert enc.embed_image(images, sample=True).shape[1] == 1 + 5
    enc.eval()
    out = enc(images, torch.randint(5, VOCAB, (2, 3)), torch.ones(2, 3, dtype=torch.long))
    assert out.image_tokens.shape[1] == 1 + 16  # evaluation keeps every patch


def test_sampled_patches_keep_their_positions():
    enc, _ = _encoder(max_image_tokens=4)
    images = torch.randn(1, 3, 32, 32)
    full = enc.embed_image(images, sample=False)[0, 1:]  # [16, D]
    torch.manual_seed(1)
    sampled = enc.embed_image(images, sample=True)[0, 1:]  # [4, D]
    matches = [(full - row).abs().amax(1).argmin().item() for row in sampled]
    assert all(torch.allclose(full[m], row, atol=1e-6) for m, row in zip(matches, sampled))
    assert matches == sorted(matches) and len(set(matches)) == 4


def test_text_width_is_projected_and_cnn_refused():
    enc, _ = _encoder(text_hidden=32)
    assert isinstance(enc.text_proj, torch.nn.Linear)
    cnn = TimmImageEncoder("resnet10t", img_size=32)
    text = HFTextEncoder(config=dict(model_type="bert", hidden_size=32, num_hidden_layers=0, num_attention_heads=2, intermediate_size=64), vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="ViT"):
        SingleStreamEncoder(cnn, text)
