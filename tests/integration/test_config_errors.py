"""Bad configs fail at start with one message naming the key."""

import pytest

from mmresearch.data.tokenizer import build_shapes_tokenizer
from mmresearch.models.builder import build_model
from mmresearch.utils.errors import ConfigError

from helpers import REPO, run_cli


@pytest.fixture(scope="module")
def tokenizer():
    return build_shapes_tokenizer()


@pytest.mark.parametrize(
    "override, message",
    [
        ("image_encoder.name=resnet1", r"image_encoder\.name='resnet1' is not known\. Did you mean"),
        ("model.image_head.out_dim=abc", r"head\.out_dim must be a positive int, got 'abc'"),
        ("model.text_head.out_dim=64", r"model\.image_head\.out_dim=128 and model\.text_head\.out_dim=64"),
        ("temperature.init_tau=hot", r"temperature\.init_tau must be a number"),
        ("loss.label_smoothing=1.5", r"loss\.label_smoothing"),
        ("text_encoder.pooling=max", r"text_encoder\.pooling='max' is not known"),
        ("+image_encoder.model_kwargs.depth=3", r"image_encoder\.model_kwargs"),
    ],
)
def test_bad_values_name_the_config_key(compose_cfg, tokenizer, override, message):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, tokenizer)


@pytest.mark.slow
def test_unknown_group_option_lists_the_available_ones(tmp_path):
    proc = run_cli(["loss=infonse", f"hydra.run.dir={tmp_path}"], cwd=REPO, timeout=120)
    assert proc.returncode != 0
    assert "Could not find 'loss/infonse'" in proc.stderr
    assert "infonce" in proc.stderr and "siglip" in proc.stderr  # Hydra lists the options
