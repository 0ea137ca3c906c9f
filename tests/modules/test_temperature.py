import math

import pytest
import torch

from mmresearch.modules.temperature import FixedTemperature, LearnableTemperature, ScheduledTemperature
from mmresearch.utils.errors import ConfigError


def test_fixed_is_constant_and_has_no_parameters():
    t = FixedTemperature(tau=0.05)
    assert float(t()) == pytest.approx(20.0)
    assert list(t.parameters()) == []


def test_learnable_is_log_parameterised_and_clamped_like_clip():
    t = LearnableTemperature(init_tau=0.07)
    assert float(t.log_logit_scale) == pytest.approx(math.log(1 / 0.07))
    assert float(t()) == pytest.approx(1 / 0.07)
    (-t()).backward()  # gradient reaches the log-parameter
    assert t.log_logit_scale.grad is not None
    with torch.no_grad():
        t.log_logit_scale.fill_(10.0)
    t.clamp_()
    assert float(t()) == pytest.approx(100.0)
    with torch.no_grad():
        t.log_logit_scale.fill_(-3.0)
    t.clamp_()
    assert float(t()) == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "exponential"])
def test_scheduled_goes_from_start_to_end(schedule):
    t = ScheduledTemperature(start_tau=0.1, end_tau=0.02, steps=100, schedule=schedule)
    t.step(0)
    assert t.tau == pytest.approx(0.1)
    t.step(100)
    assert t.tau == pytest.approx(0.02)
    t.step(1000)
    assert t.tau == pytest.approx(0.02)
    mid = t.value_at(50)
    assert 0.02 < mid < 0.1
    if schedule == "linear":
        assert mid == pytest.approx(0.06)
    if schedule == "cosine":
        assert mid == pytest.approx(0.06)
    if schedule == "exponential":
        assert mid == pytest.approx(math.sqrt(0.1 * 0.02))


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: FixedTemperature(tau=0), "temperature.tau"),
        (lambda: FixedTemperature(tau="hot"), "temperature.tau"),
        (lambda: LearnableTemperature(init_tau=0.001), "temperature"),
        (lambda: ScheduledTemperature(steps=0), "temperature.steps"),
        (lambda: ScheduledTemperature(schedule="step"), "temperature.schedule"),
    ],
)
def test_bad_values_name_the_key(build, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build()
