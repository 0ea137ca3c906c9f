"""Momentum (EMA) copies of modules, as in MoCo and ALBEF, on torch's ``AveragedModel``."""

from __future__ import annotations

from typing import Mapping

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mmresearch.utils.errors import ConfigError


class MomentumCopy(nn.Module):
    """Exponential moving averages of a set of named modules.

    ``update(online)`` sets every averaged parameter to ``m * p_ema + (1 - m) * p_online``
    (``torch.optim.swa_utils.get_ema_multi_avg_fn``); buffers (e.g. BatchNorm statistics) are
    copied from the online modules. The copies start equal to the online modules (ALBEF's
    ``copy_params``) and get no gradient; they are part of the state dict (resumed runs keep them).

    Args:
        modules: ``{name: module}`` to follow; ``update`` must get the same names.
        momentum: ``m`` in ``[0, 1]`` (ALBEF: 0.995). 1 freezes the copy, 0 makes it the online model.

    Use ``copy[name]`` for the averaged module of ``name``.
    """

    def __init__(self, modules: Mapping[str, nn.Module], momentum: float = 0.995) -> None:
        super().__init__()
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"model.momentum must be a number in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.names = tuple(modules)
        online = nn.ModuleDict(dict(modules))
        self.average = AveragedModel(online, multi_avg_fn=get_ema_multi_avg_fn(self.momentum), use_buffers=False)
        self.average.update_parameters(online)  # n_averaged 0 -> 1: a plain copy; later calls are EMA steps
        for p in self.average.parameters():
            p.requires_grad_(False)

    def __getitem__(self, name: str) -> nn.Module:
        return self.average.module[name]

    def update(self, modules: Mapping[str, nn.Module]) -> None:
        """One EMA step towards the online ``modules`` (call after each optimizer step)."""
        if tuple(modules) != self.names:
            raise ValueError(f"momentum update got modules {tuple(modules)}, the copy follows {self.names}")
        self.average.update_parameters(nn.ModuleDict(dict(modules)))
