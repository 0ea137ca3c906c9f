"""Typed values are checked right after composition, before the tokenizer or any data is built,
with one line naming the key and the value; unknown keys get a did-you-mean."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

import mmresearch.train as train_module
from mmresearch.utils.config_checks import check_config_values, unknown_key_message
from mmresearch.utils.errors import ConfigError


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=abc", "optimizer.lr must be a number > 0, got 'abc'"),
        ("optimizer.lr=0", "optimizer.lr must be a number > 0, got 0"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay must be a number >= 0, got -1"),
        ("optimizer.betas=[0.9]", "optimizer.betas must be two numbers in [0, 1), got [0.9]"),
        ("scheduler.warmup_ratio=abc", "scheduler.warmup_ratio must be a number in [0, 1), got 'abc'"),
        ("scheduler.warmup_steps=1.5", "scheduler.warmup_steps must be null or an integer >= 0, got 1.5"),
        ("seed=abc", "seed must be an integer in [0, 4294967295], got 'abc'"),
        ("num_threads=0", "num_threads must be null or an integer >= 1, got 0"),
        ("trainer.max_epochs=abc", "trainer.max_epochs must be null or an integer >= -1, got 'abc'"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches must be null, an integer >= 0 or a fraction in [0, 1], got 1.5"),
        ("trainer.devices=abc", "trainer.devices must be an integer >= 1 (or -1), 'auto', a list of device indices or a string of them, got 'abc'"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be an integer >= 1, got 0"),
        ("trainer.enable_progress_bar=maybe", "trainer.enable_progress_bar must be true or false, got 'maybe'"),
        ("resume=sometimes", "resume='sometimes' is not known. Allowed values: auto, never"),
    ],
)
def test_bad_values_are_one_line_naming_key_and_value(compose_cfg, override, message):
    with pytest.raises(ConfigError) as err:
        check_config_values(compose_cfg([override]))
    assert str(err.value) == message


@pytest.mark.parametrize("overrides", [[], ["trainer=debug"], ["scheduler=none"], ["trainer.devices=auto", "trainer.limit_val_batches=0.5"],
                                       ["trainer.devices=[0,1]", "optimizer.lr=1e-4", "seed=4294967295", "trainer.max_epochs=null"]])
def test_good_configs_pass(compose_cfg, overrides):
    check_config_values(compose_cfg(overrides))


@pytest.mark.parametrize("override", ["optimizer.lr=abc", "scheduler.warmup_ratio=abc", "seed=abc", "trainer.max_epochs=abc"])
def test_train_stops_before_building_anything(compose_cfg, monkeypatch, override):
    def built(*args, **kwargs):
        raise AssertionError("something was built before the config was checked")

    monkeypatch.setattr(train_module, "build", built)
    monkeypatch.setattr(train_module, "build_dict", built)
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.") + " must be"):
        train_module.train(compose_cfg([override]))


def test_unknown_key_suggests_the_close_one():
    cfg = OmegaConf.create({"trainer": {"max_epochs": 1, "max_steps": -1}, "loss": {"margin": 0.2}})
    assert unknown_key_message("trainer.max_epoch", cfg) == "trainer.max_epoch is not a config key. Did you mean trainer.max_epochs?"
    assert unknown_key_message("loss.margn", cfg) == "loss.margn is not a config key. Did you mean loss.margin?"
    assert unknown_key_message("trainr.max_epochs", cfg) == "trainr.max_epochs is not a config key. Did you mean trainer.max_epochs?"
    assert unknown_key_message("loss.zzz", cfg) == "loss.zzz is not a config key. The keys of loss: margin"
    assert (unknown_key_message("data.test_sze", OmegaConf.create({"data": {"test_size": 1}}), what="a key of the evaluated run's config")
            == "data.test_sze is not a key of the evaluated run's config. Did you mean data.test_size?")
