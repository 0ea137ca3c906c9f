"""Cross-attention fusion: shapes, padding, image positions, initialisation from BERT layers."""

import pytest
import torch
from transformers import BertConfig, BertModel

from mmresearch.modules.fusions.cross_attention import CrossAttentionFusion, load_bert_layer, split_bert_layers
from mmresearch.utils.errors import ConfigError


def _fusion(**kw):
    torch.manual_seed(0)
    args = dict(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, image_dim=24)
    args.update(kw)
    return CrossAttentionFusion(**args).eval()


def test_shapes_and_image_width_map():
    fusion = _fusion()
    out = fusion(torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.long), torch.randn(3, 7, 24))
    assert out.pooled.shape == (3, 16) and out.text_tokens.shape == (3, 5, 16) and out.image_tokens.shape == (3, 7, 16)
    assert torch.equal(out.pooled, out.text_tokens[:, 0])


def test_padding_does_not_change_real_tokens_and_the_image_matters():
    fusion = _fusion()
    text, image = torch.randn(2, 4, 16), torch.randn(2, 7, 24)
    mask = torch.ones(2, 4, dtype=torch.long)
    base = fusion(text, mask, image).text_tokens
    padded = fusion(torch.cat([text, torch.randn(2, 3, 16)], 1), torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], 1), image).text_tokens
    torch.testing.assert_close(padded[:, :4], base, atol=1e-5, rtol=1e-5)
    other = fusion(text, mask, torch.randn(2, 7, 24)).text_tokens
    assert not torch.allclose(other, base, atol=1e-3)


def test_image_positions_make_token_order_matter():
    text, mask, image = torch.randn(1, 4, 16), torch.ones(1, 4, dtype=torch.long), torch.randn(1, 6, 16)
    swapped = image[:, [1, 0, 2, 3, 4, 5]]
    plain = _fusion(image_dim=16)
    torch.testing.assert_close(plain(text, mask, image).pooled, plain(text, mask, swapped).pooled, atol=1e-5, rtol=1e-5)  # a set
    with torch.no_grad():
        positioned = _fusion(image_dim=16, num_image_tokens=6, image_positions=True)
        positioned.image_pos.normal_()
    assert not torch.allclose(positioned(text, mask, image).pooled, positioned(text, mask, swapped).pooled, atol=1e-3)
    with pytest.raises(ValueError, match="position embedding"):
        positioned(text, mask, torch.randn(1, 5, 16))


def test_a_fusion_layer_loaded_from_bert_computes_the_bert_layer_when_cross_attention_is_silent():
    bert = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    removed = split_bert_layers(bert, keep=1)
    assert len(bert.encoder.layer) == 1 and len(removed) == 2 and bert.config.num_hidden_layers == 1
    bert(input_ids=torch.randint(0, 30, (2, 5)))  # the truncated text model still runs
    fusion = _fusion(image_dim=16, num_layers=1)
    load_bert_layer(fusion.layers[0], removed[0])
    with torch.no_grad():  # no contribution from the image: the layer is the BERT layer
        fusion.layers[0].multihead_attn.out_proj.weight.zero_()
        fusion.layers[0].multihead_attn.out_proj.bias.zero_()
        x = torch.randn(2, 5, 16)
        want = removed[0](x)
        want = want[0] if isinstance(want, tuple) else want
        got = fusion(x, torch.ones(2, 5, dtype=torch.long), torch.randn(2, 3, 16)).text_tokens
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_errors_name_the_setting():
    with pytest.raises(ConfigError, match="num_heads"):
        _fusion(num_heads=3)
    with pytest.raises(ConfigError, match="model.text_layers"):
        split_bert_layers(BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)), keep=5)
    with pytest.raises(ConfigError, match="BERT-style"):
        split_bert_layers(torch.nn.Linear(2, 2), keep=1)
