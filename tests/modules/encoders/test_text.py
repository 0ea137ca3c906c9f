import pytest
import torch

from mmresearch.modules.encoders.text import HFTextEncoder
from mmresearch.utils.errors import ConfigError

TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)


def test_cls_and_mean_pooling_shapes_and_padding():
    ids = torch.randint(5, 50, (3, 8))
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, 4:] = 0
    for pooling in ("cls", "mean"):
        enc = HFTextEncoder(config=TINY_BERT, vocab_size=50, pooling=pooling, output="both").eval()
        out = enc(ids, mask)
        assert out.pooled.shape == (3, 32) and out.tokens.shape == (3, 8, 32)
        if pooling == "mean":
            torch.testing.assert_close(out.pooled[0], out.tokens[0, :4].mean(0))


def test_every_parameter_gets_a_gradient():
    """No unused pooler: DDP would refuse parameters that take no part in the loss."""
    enc = HFTextEncoder(config=TINY_BERT, vocab_size=50)
    enc(torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)).pooled.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_vocab_size_comes_from_the_tokenizer():
    enc = HFTextEncoder(config=TINY_BERT, vocab_size=77)
    assert enc.model.get_input_embeddings().num_embeddings == 77


def test_exactly_one_source_is_required():
    with pytest.raises(ConfigError, match="exactly one of text_encoder.name_or_path"):
        HFTextEncoder()
    with pytest.raises(ConfigError, match="exactly one"):
        HFTextEncoder(name_or_path="bert-base-uncased", config=TINY_BERT)


def test_missing_pretrained_model_offline_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="text_encoder.name_or_path"):
        HFTextEncoder(name_or_path=str(tmp_path / "no-such-model"))


def test_local_pretrained_directory_loads(tmp_path):
    HFTextEncoder(config=TINY_BERT, vocab_size=40).model.save_pretrained(tmp_path)
    enc = HFTextEncoder(name_or_path=str(tmp_path), vocab_size=40)
    assert enc.output_dim == 32
    with pytest.raises(ConfigError, match="embedding rows"):
        HFTextEncoder(name_or_path=str(tmp_path), vocab_size=41)
