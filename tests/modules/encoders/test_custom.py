import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from mmresearch.modules.encoders.custom import CustomEncoder
from mmresearch.utils.errors import ConfigError


class TinyCNN(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, width, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


class TinyTextModel(nn.Module):
    output_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 6)

    def forward(self, input_ids, attention_mask):
        return self.emb(input_ids) * attention_mask.unsqueeze(-1)  # [B, L, 6] tokens


def test_any_module_plugs_in_through_target_with_a_declared_width():
    cfg = OmegaConf.create({"_target_": "mmresearch.modules.encoders.custom.CustomEncoder", "output_dim": 8,
                            "module": {"_target_": f"{__name__}.TinyCNN", "width": 8}})
    enc = instantiate(cfg)
    assert enc.output_dim == 8
    assert enc(torch.randn(2, 3, 16, 16)).pooled.shape == (2, 8)


def test_text_module_with_output_dim_attribute_returns_tokens_and_first_token():
    enc = CustomEncoder(TinyTextModel(), modality="text")
    ids = torch.randint(0, 20, (3, 5))
    out = enc(ids, torch.ones(3, 5, dtype=torch.long))
    assert enc.output_dim == 6 and out.tokens.shape == (3, 5, 6)
    torch.testing.assert_close(out.pooled, out.tokens[:, 0])


def test_missing_width_names_the_key():
    with pytest.raises(ConfigError, match=r"image_encoder\.output_dim is required"):
        CustomEncoder(TinyCNN())


def test_wrong_declared_width_is_caught_on_the_first_batch():
    enc = CustomEncoder(TinyCNN(width=8), output_dim=16)
    with pytest.raises(ConfigError, match=r"image_encoder\.output_dim=16 but TinyCNN returns width 8"):
        enc(torch.randn(1, 3, 16, 16))
