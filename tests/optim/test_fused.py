"""``fused: auto``: torch's fused optimizer where the parameters' device has one, else torch's default."""

from functools import partial

import pytest
import torch
from torch import nn

from mmresearch.models.base import MultimodalModule
from mmresearch.optim.fused import fused_supported_devices, resolve_fused


def _params():
    return [nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(2))]


def test_auto_becomes_fused_on_supported_devices():
    assert "cpu" in fused_supported_devices()  # torch >= 2.4
    factory = resolve_fused(partial(torch.optim.AdamW, lr=1e-3, fused="auto"), _params())
    assert factory.keywords == {"lr": 1e-3, "fused": True}
    assert factory(_params()).param_groups[0]["fused"] is True


def test_auto_falls_back_to_torch_default():
    # fp16 loss scaling + gradient clipping: a fused step unscales internally, Lightning could not clip
    assert resolve_fused(partial(torch.optim.AdamW, fused="auto"), _params(), fp16_with_clipping=True).keywords["fused"] is None
    # a parameter on a device without fused kernels (meta) or not floating point
    meta = [nn.Parameter(torch.randn(2, device="meta"))]
    assert resolve_fused(partial(torch.optim.AdamW, fused="auto"), meta).keywords["fused"] is None


@pytest.mark.parametrize("value", [True, False, None])
def test_explicit_values_pass_through(value):
    factory = partial(torch.optim.AdamW, fused=value)
    assert resolve_fused(factory, _params()) is factory


def test_fused_and_unfused_adamw_take_the_same_steps():
    """The fused kernel is the same AdamW: a few steps from the same start give the same weights."""
    torch.manual_seed(0)
    start, grads = _params(), [[torch.randn(3, 2), torch.randn(2)] for _ in range(3)]
    results = []
    for fused in (None, True):
        params = [nn.Parameter(p.detach().clone()) for p in start]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-6, fused=fused)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            opt.step()
        results.append([p.detach() for p in params])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


class _Tiny(MultimodalModule):
    def __init__(self, optimizer):
        super().__init__(optimizer=optimizer)
        self.layer = nn.Linear(4, 4)


def test_model_optimizer_resolves_auto_and_keeps_weight_decay_groups():
    opt = _Tiny(partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1, fused="auto")).make_optimizer()
    assert [g["fused"] for g in opt.param_groups] == [True, True]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("saved,loaded", [("auto", None), (None, "auto"), (False, "auto")])
def test_loading_a_checkpoint_keeps_this_runs_implementation(saved, loaded):
    """Resuming from a checkpoint of another setting (or device): the moments and step counts load,
    the fused choice of this run stays (torch would copy the saved flag into the groups)."""
    source = _Tiny(partial(torch.optim.AdamW, lr=1e-2, fused=saved))
    opt = source.make_optimizer()
    for p in source.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    state = opt.state_dict()

    target = _Tiny(partial(torch.optim.AdamW, lr=1e-2, fused=loaded))
    target.load_state_dict(source.state_dict())
    resumed = target.make_optimizer()
    expected = resumed.defaults["fused"]
    resumed.load_state_dict(state)
    assert [g["fused"] for g in resumed.param_groups] == [expected, expected]
    assert getattr(resumed, "_step_supports_amp_scaling", False) == bool(expected)  # what fp16 loss scaling reads
    for p_src, p_dst in zip((p for g in opt.param_groups for p in g["params"]), (p for g in resumed.param_groups for p in g["params"])):
        torch.testing.assert_close(resumed.state[p_dst]["exp_avg"], opt.state[p_src]["exp_avg"])
        assert float(resumed.state[p_dst]["step"]) == 1.0
    for p in target.parameters():
        p.grad = torch.randn_like(p)
    resumed.step()  # the resumed optimizer steps with its own implementation
