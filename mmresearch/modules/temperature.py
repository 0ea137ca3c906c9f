"""Temperatures for contrastive logits: fixed, learnable (CLIP-style) and scheduled.

Every temperature is an ``nn.Module`` whose ``forward()`` returns the logit scale ``1 / tau`` as a
scalar tensor, so losses take ``logit_scale`` and never care which kind produced it. The
LightningModule calls ``step(global_step)`` before each training step and ``clamp_()`` after each
optimizer step, and logs ``tau`` every step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmresearch.utils.errors import ConfigError, check_choice


def _check_tau(key: str, tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (0 < float(tau) < 100):
        raise ConfigError(f"{key} must be a number in (0, 100), got {tau!r}")
    return float(tau)


class Temperature(nn.Module):
    """Base class: ``forward() -> logit_scale`` (scalar tensor, ``1 / tau``)."""

    name = "base"

    def step(self, global_step: int) -> None:
        """Called before every training step with the optimizer step count."""

    @torch.no_grad()
    def clamp_(self) -> None:
        """Called after every optimizer step (learnable temperatures clamp their parameter)."""

    @property
    def tau(self) -> float:
        return float(1.0 / self.forward().detach())


class FixedTemperature(Temperature):
    """A constant temperature ``tau``; nothing is learned."""

    name = "fixed"

    def __init__(self, tau: float = 0.07) -> None:
        super().__init__()
        self.register_buffer("logit_scale", torch.tensor(1.0 / _check_tau("temperature.tau", tau)))

    def forward(self) -> Tensor:
        return self.logit_scale


class LearnableTemperature(Temperature):
    """CLIP's learnable temperature: a log-parameterised logit scale, clamped after every step.

    Args:
        init_tau: starting temperature (CLIP 0.07; SigLIP 0.1).
        max_logit_scale: upper clamp of ``1 / tau`` (CLIP: 100, i.e. tau >= 0.01).
        min_logit_scale: lower clamp of ``1 / tau`` (CLIP: 1, i.e. the log-parameter >= 0).
    """

    name = "learnable"

    def __init__(self, init_tau: float = 0.07, max_logit_scale: float = 100.0, min_logit_scale: float = 1.0) -> None:
        super().__init__()
        init_tau = _check_tau("temperature.init_tau", init_tau)
        if not (0 < min_logit_scale <= 1.0 / init_tau <= max_logit_scale):
            raise ConfigError(
                "temperature: need 0 < temperature.min_logit_scale <= 1/temperature.init_tau <= "
                f"temperature.max_logit_scale, got {min_logit_scale}, {1.0 / init_tau:.4g}, {max_logit_scale}"
            )
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_tau)))
        self.log_min, self.log_max = math.log(min_logit_scale), math.log(max_logit_scale)

    def forward(self) -> Tensor:
        return self.log_logit_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_logit_scale.clamp_(self.log_min, self.log_max)


class ScheduledTemperature(Temperature):
    """A temperature that follows a schedule from ``start_tau`` to ``end_tau`` over ``steps``.

    Args:
        start_tau: temperature at step 0.
        end_tau: temperature from step ``steps`` on.
        steps: length of the schedule in optimizer steps.
        schedule: ``"cosine"``, ``"linear"`` or ``"exponential"`` (geometric in tau).
    """

    name = "scheduled"
    SCHEDULES = ("cosine", "linear", "exponential")

    def __init__(self, start_tau: float = 0.1, end_tau: float = 0.03, steps: int = 1000, schedule: str = "cosine") -> None:
        super().__init__()
        self.start_tau = _check_tau("temperature.start_tau", start_tau)
        self.end_tau = _check_tau("temperature.end_tau", end_tau)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"temperature.steps must be a positive int, got {steps!r}")
        check_choice("temperature.schedule", schedule, self.SCHEDULES)
        self.steps, self.schedule = steps, schedule
        self.register_buffer("logit_scale", torch.tensor(1.0 / self.start_tau))

    def value_at(self, global_step: int) -> float:
        """The temperature at ``global_step``."""
        t = min(max(global_step, 0), self.steps) / self.steps
        if self.schedule == "linear":
            return self.start_tau + t * (self.end_tau - self.start_tau)
        if self.schedule == "exponential":
            return self.start_tau * (self.end_tau / self.start_tau) ** t
        return self.end_tau + 0.5 * (self.start_tau - self.end_tau) * (1 + math.cos(math.pi * t))

    def step(self, global_step: int) -> None:
        self.logit_scale.fill_(1.0 / self.value_at(global_step))

    def forward(self) -> Tensor:
        return self.logit_scale
