"""MomentumCopy: starts as a copy, takes exact EMA steps, copies buffers, never trains."""

import pytest
import torch
from torch import nn

from mmresearch.modules.momentum import MomentumCopy
from mmresearch.utils.errors import ConfigError


def _modules():
    torch.manual_seed(0)
    return {"enc": nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), "proj": nn.Linear(3, 2)}


def test_starts_equal_and_takes_ema_steps():
    online = _modules()
    copy = MomentumCopy(online, momentum=0.9)
    for name, module in online.items():
        for p, q in zip(module.parameters(), copy[name].parameters()):
            assert torch.equal(p, q) and not q.requires_grad
    before = [q.clone() for q in copy["proj"].parameters()]
    with torch.no_grad():
        for p in online["proj"].parameters():
            p.add_(1.0)
    copy.update(online)
    for old, p, q in zip(before, online["proj"].parameters(), copy["proj"].parameters()):
        torch.testing.assert_close(q, 0.9 * old + 0.1 * p)
    # a second step from the new average
    mid = [q.clone() for q in copy["proj"].parameters()]
    copy.update(online)
    for old, p, q in zip(mid, online["proj"].parameters(), copy["proj"].parameters()):
        torch.testing.assert_close(q, 0.9 * old + 0.1 * p)


def test_buffers_are_copied_and_momentum_zero_follows_exactly():
    online = _modules()
    copy = MomentumCopy(online, momentum=0.0)
    online["enc"].train()
    online["enc"](torch.randn(8, 4))  # moves the BatchNorm running statistics
    with torch.no_grad():
        online["proj"].weight.mul_(3)
    copy.update(online)
    assert torch.equal(copy["enc"][1].running_mean, online["enc"][1].running_mean)
    assert torch.equal(copy["proj"].weight, online["proj"].weight)


def test_tied_weights_stay_tied_in_the_copy():
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5)
    head.weight = emb.weight
    copy = MomentumCopy({"emb": emb, "head": head}, momentum=0.5)
    assert copy["head"].weight is copy["emb"].weight
    with torch.no_grad():
        emb.weight.add_(2.0)
    copy.update({"emb": emb, "head": head})
    assert copy["head"].weight is copy["emb"].weight


def test_errors():
    with pytest.raises(ConfigError, match="model.momentum"):
        MomentumCopy(_modules(), momentum=1.5)
    copy = MomentumCopy(_modules())
    with pytest.raises(ValueError, match="follows"):
        copy.update({"proj": nn.Linear(3, 2)})
