"""Every loss gives the same value and the same DDP-averaged gradients at world size 2 as in one process.

One spawn of 2 gloo processes computes every case (loss x image ids x distributed mode); the
parametrised tests compare each case against the single-process run on the concatenated batch.

The workers are started with ``runpy.run_path`` on this very file (run under a private
``__name__``), so they do not depend on how pytest names this module.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from helpers import make_loss

from helpers import run_gloo_worker, spawn_workers

pytestmark = pytest.mark.slow

WORLD = 2
N_PER_RANK = 4
D_IN, D = 5, 3
G = WORLD * N_PER_RANK
TOL = {"atol": 1e-5, "rtol": 1e-5}
WORKER_RUN_NAME = "__mmr_loss_dist_worker__"

# name -> (registry name, options)
LOSS_CASES = {
    "infonce": ("infonce", {"label_smoothing": 0.1}),
    "siglip": ("siglip", {"init_bias": -3.0}),
    "triplet_hardest": ("triplet", {"margin": 0.5, "max_violation": True}),
    "triplet_sum": ("triplet", {"margin": 0.5, "max_violation": False}),
    "ntxent": ("ntxent", {}),
    "margin": ("margin", {"margin": 1.2}),
    "infonce_chunked": ("infonce", {"label_smoothing": 0.1, "chunk_size": 3}),  # rows in checkpointed chunks
}
# every loss again with one NegCLIP hard-negative caption per row (gathered like the texts)
HARD_NEGATIVES = "_hard_negatives"
LOSS_CASES.update({name + HARD_NEGATIVES: case for name, case in list(LOSS_CASES.items())})
# Image id each hard negative is nonetheless true of (-1: none); with pair ids, row i has id i.
NEG_IDS = {"pairs": [-1, -1, 5, -1, -1, -1, -1, 1], "repeated_ids": [-1, 3, -1, 0, -1, -1, 2, -1]}
# Image ids of the 8 rows: id 0 on both ranks, id 2 across the rank boundary, id 1 on rank 0 only.
ID_CASES = {"pairs": None, "repeated_ids": [0, 1, 1, 2, 2, 3, 4, 0]}
# name -> (local_loss, gather_with_grad); local_loss=True + gather_with_grad=False is rejected.
MODES = {"local": (True, True), "global": (False, True), "global_plain_gather": (False, False)}
CASES = [(loss, ids, mode) for loss in LOSS_CASES for ids in ID_CASES for mode in MODES]


def _key(loss: str, ids: str, mode: str) -> str:
    return f"{loss}|{ids}|{mode}"


def _setup(ids_case: str):
    """The fixed model and batch: a shared linear projection, a learnable log temperature, inputs, ids."""
    gen = torch.Generator().manual_seed(1234)
    proj = nn.Linear(D_IN, D, dtype=torch.float64)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(D, D_IN, generator=gen, dtype=torch.float64))
        proj.bias.copy_(torch.randn(D, generator=gen, dtype=torch.float64))
    log_scale = nn.Parameter(torch.tensor(math.log(4.0), dtype=torch.float64))
    x_img = torch.randn(G, D_IN, generator=gen, dtype=torch.float64)
    x_txt = torch.randn(G, D_IN, generator=gen, dtype=torch.float64)
    x_neg = torch.randn(G, D_IN, generator=gen, dtype=torch.float64)
    ids = ID_CASES[ids_case]
    if ids is not None:
        first = {}
        for row, i in enumerate(ids):
            first.setdefault(i, row)
        x_img = x_img[[first[i] for i in ids]].clone()  # one image, several captions
        ids = torch.tensor(ids)
    return proj, log_scale, x_img, x_txt, x_neg, ids


def _step(loss_case: str, ids_case: str, mode: str, rows: slice) -> dict:
    """Forward + backward of ``rows`` of the batch; returns values, parameter and input gradients."""
    proj, log_scale, x_img, x_txt, x_neg, ids = _setup(ids_case)
    name, options = LOSS_CASES[loss_case]
    local_loss, gather_with_grad = MODES[mode]
    loss_fn = make_loss(name, local_loss=local_loss, gather_with_grad=gather_with_grad, **options).double()
    xi = x_img[rows].clone().requires_grad_(True)
    xt = x_txt[rows].clone().requires_grad_(True)
    image_features = F.normalize(proj(xi), dim=1)
    text_features = F.normalize(proj(xt), dim=1)
    row_ids = None if ids is None else ids[rows]
    extra, xn = {}, None
    if loss_case.endswith(HARD_NEGATIVES):
        xn = x_neg[rows].clone().requires_grad_(True)
        extra = {"hard_negative_text_features": F.normalize(proj(xn), dim=1),
                 "hard_negative_image_ids": torch.tensor(NEG_IDS[ids_case])[rows]}
    out = loss_fn(image_features, text_features, log_scale.exp(), row_ids, row_ids, **extra)
    out["loss"].backward()
    params = {"proj.weight": proj.weight, "proj.bias": proj.bias, "log_scale": log_scale}
    params.update({f"loss.{n}": p for n, p in loss_fn.named_parameters()})
    for n, p in params.items():
        assert p.grad is not None, f"{loss_case}/{ids_case}/{mode}: no gradient for {n}"
    return {
        "values": {k: v.detach() for k, v in out.items()},
        "param_grads": {n: p.grad.detach() for n, p in params.items()},
        "input_grads": {"x_img": xi.grad.detach(), "x_txt": xt.grad.detach(),
                        **({"x_neg": xn.grad.detach()} if xn is not None else {})},
    }


def _rank_results(rank: int) -> dict:
    """Every case on this rank's half, parameter gradients averaged as DDP does."""
    rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    results = {}
    for case in CASES:
        res = _step(*case, rows=rows)
        for grad in res["param_grads"].values():
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            grad /= WORLD
        results[_key(*case)] = res
    return results


def _worker(rank: int, port: int, out_dir: str) -> None:
    run_gloo_worker(rank, port, out_dir, WORLD, _rank_results)


if __name__ == WORKER_RUN_NAME:  # a spawned worker (see dist_results)
    _worker(**globals()["WORKER_ARGS"])


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory):
    """Spawn the 2 gloo workers once; returns the per-rank result dicts."""
    return spawn_workers(__file__, WORKER_RUN_NAME, WORLD, tmp_path_factory.mktemp("dist_losses"))


@pytest.mark.parametrize("loss_case, ids_case, mode", CASES, ids=[_key(*c).replace("|", "-") for c in CASES])
def test_world_size_two_equals_single_process(dist_results, loss_case, ids_case, mode):
    ranks = [r[_key(loss_case, ids_case, mode)] for r in dist_results]
    ref = _step(loss_case, ids_case, mode, rows=slice(None))

    # the mean over ranks of every returned value is the single-process value
    assert set(ranks[0]["values"]) == set(ref["values"])
    for k, v in ref["values"].items():
        mean = torch.stack([r["values"][k] for r in ranks]).mean()
        torch.testing.assert_close(mean, v, **TOL, msg=lambda m: f"value {k}: {m}")

    # DDP-averaged parameter gradients (identical on every rank) are the single-process ones
    for k, v in ref["param_grads"].items():
        for r in ranks:
            torch.testing.assert_close(r["param_grads"][k], v, **TOL, msg=lambda m: f"grad {k}: {m}")

    # input gradients: each rank holds its own rows; summed over ranks / W as DDP averages
    for k, v in ref["input_grads"].items():
        got = torch.cat([r["input_grads"][k] for r in ranks]) / WORLD
        torch.testing.assert_close(got, v, **TOL, msg=lambda m: f"grad {k}: {m}")
