import pytest
import torch

from mmresearch.modules.heads import ProjectionHead
from mmresearch.utils.errors import ConfigError


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_output_is_unit_norm_with_the_right_width(kind):
    head = ProjectionHead(in_dim=12, out_dim=5, kind=kind)
    z = head(torch.randn(7, 12))
    assert z.shape == (7, 5)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(7))


def test_unnormalised_head_keeps_the_norm():
    head = ProjectionHead(in_dim=4, out_dim=4, normalize=False)
    assert not torch.allclose(head(torch.randn(3, 4)).norm(dim=-1), torch.ones(3))


def test_bad_kind_and_width_name_the_key():
    with pytest.raises(ConfigError, match="head.kind"):
        ProjectionHead(in_dim=4, out_dim=4, kind="conv")
    with pytest.raises(ConfigError, match="out_dim"):
        ProjectionHead(in_dim=4, out_dim="wide")
