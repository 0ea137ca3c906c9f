"""Shared fixtures of the loss tests: small batches, config checks, simulated ranks."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmresearch.modules.losses import Columns

CONF_DIR = Path(__file__).resolve().parents[3] / "conf" / "loss"



def _leaves(*tensors):
    """Fresh gradient leaves of the given tensors (``None`` entries dropped), in order."""
    return [t.detach().clone().requires_grad_(True) for t in tensors if t is not None]

@pytest.fixture
def batch():
    """``make(n, d, seed, ids)`` -> (image_features [n, d], text_features [n, d], ids or None), float64.

    With ids, rows sharing an id get the same image features (one image, several captions).
    """

    def make(n: int = 4, d: int = 3, seed: int = 0, ids: list[int] | None = None):
        g = torch.Generator().manual_seed(seed)
        images = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
        texts = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
        if ids is None:
            return images, texts, None
        assert len(ids) == n
        first = {}
        for row, i in enumerate(ids):
            first.setdefault(i, row)
        images = images[[first[i] for i in ids]].clone()
        return images, texts, torch.tensor(ids)

    return make


@pytest.fixture
def check_config():
    """``check(cls, name)``: conf/loss/<name>.yaml targets ``cls`` and lists every option with its default."""

    def check(cls, name: str):
        cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
        options = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"}
        params = inspect.signature(cls.__init__).parameters
        defaults = {k: p.default for k, p in params.items() if k != "self"}
        assert options == defaults
        module = instantiate(cfg)
        assert type(module) is cls
        assert cls.name == name

    return check


@pytest.fixture
def simulated_ranks():
    """``run(module, images, texts, logit_scale, ids, world, negatives=None, negative_ids=None)``
    -> (mean loss dict, grads).

    Emulates ``local_loss=True, gather_with_grad=True`` in one process: rank ``r`` computes its
    rows against the full batch (``Columns`` are the full leaf tensors, so gradients flow to every
    row as they would through the gather), and the mean over ranks is what DDP averages. Hard
    negatives ``[M, D]`` (with ``negative_ids`` ``[M]``) are, like the gathered ones, all ranks'
    negatives for every rank. Returns the mean over ranks of every returned value and the
    gradients of (images, texts, logit_scale[, negatives]) of that mean.
    """

    def run(module, images, texts, logit_scale, ids, world: int, negatives=None, negative_ids=None):
        leaves = _leaves(images, texts, logit_scale, negatives)
        images, texts, logit_scale = leaves[:3]
        extra = {} if negatives is None else {"negatives": leaves[3], "negative_ids": negative_ids}
        g = images.shape[0]
        n = g // world
        all_ids = torch.arange(g) if ids is None else ids
        columns_ids = (all_ids, all_ids)
        outs = []
        for r in range(world):
            rows = slice(r * n, (r + 1) * n)
            cols = Columns(images, texts, *columns_ids, offset=r * n)
            outs.append(module.compute(images[rows], texts[rows], logit_scale, all_ids[rows], all_ids[rows], cols, **extra))
        mean = {k: torch.stack([o[k] for o in outs]).mean() for k in outs[0]}
        mean["loss"].backward()
        return mean, tuple(leaf.grad for leaf in leaves)

    return run


@pytest.fixture
def full_batch():
    """``run(module, images, texts, logit_scale, ids, negatives=None, negative_ids=None)``
    -> (loss dict, grads of images, texts, scale[, negatives])."""

    def run(module, images, texts, logit_scale, ids, negatives=None, negative_ids=None):
        leaves = _leaves(images, texts, logit_scale, negatives)
        images, texts, logit_scale = leaves[:3]
        extra = {} if negatives is None else {"hard_negative_text_features": leaves[3], "hard_negative_image_ids": negative_ids}
        out = module(images, texts, logit_scale, ids, ids, **extra)
        out["loss"].backward()
        return out, tuple(leaf.grad for leaf in leaves)

    return run
