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
        ("model.towers.image.head.out_dim=abc", r"head\.out_dim must be a positive int, got 'abc'"),
        ("model.towers.text.head.out_dim=64", r"model\.towers\.image\.head\.out_dim=128 and model\.towers\.text\.head\.out_dim=64"),
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


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, args, message",
    [
        ("mmresearch.train", ["trainer.max_epoch=3"], "trainer.max_epoch is not a config key. Did you mean trainer.max_epochs?"),
        ("mmresearch.train", ["--multirun", "loss=triplet", "loss.margn=0.1", "seed=0,1"], "loss.margn is not a config key. Did you mean loss.margin?"),
        ("mmresearch.eval", ["ckpt_path=x.ckpt", "precison=32"], "precison is not a config key. Did you mean precision?"),
    ],
)
def test_misspelled_key_is_one_line_with_a_suggestion(tmp_path, module, args, message):
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=REPO, timeout=120, module=module)
    assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()  # nothing started


@pytest.mark.slow
def test_typed_value_error_names_the_key_before_any_data(tmp_path):
    proc = run_cli(["optimizer.lr=abc", f"hydra.run.dir={tmp_path}"], cwd=REPO, timeout=120)
    assert proc.returncode != 0 and "optimizer.lr must be a number > 0, got 'abc'" in proc.stderr
    assert "Seed set" not in proc.stdout + proc.stderr  # stopped before seeding, let alone building data
