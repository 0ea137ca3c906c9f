"""Our InfoNCE against open_clip's ``ClipLoss`` on the same features, side by side in one process.

For each batch size: the loss values (must agree to 1e-6), the gradients of both feature
matrices (max absolute difference), and the forward + backward time of each, measured
interleaved (A, B, A, B, ...) after a warm-up; the median of ``--repeats`` runs is reported with
the ratio ours / open_clip. Single process (world size 1), so ``local_loss`` and the gathers do
not come in. ``open-clip-torch`` is a benchmark-only dependency: ``pip install -c
.ci/constraints.txt open-clip-torch``.

Usage: python experiments/benchmarks/contrastive_loss.py [--sizes 256 1024 4096] [--dim 512]
       [--repeats 20] [--threads 2] [--device cpu] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _time(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def run(size: int, dim: int, repeats: int, device: str, with_ids: bool) -> dict:
    from open_clip.loss import ClipLoss

    from mmresearch.modules.losses import InfoNCELoss

    g = torch.Generator().manual_seed(size)
    image = torch.nn.functional.normalize(torch.randn(size, dim, generator=g), dim=-1).to(device)
    text = torch.nn.functional.normalize(image.cpu() + 0.5 * torch.randn(size, dim, generator=g), dim=-1).to(device)
    scale = torch.tensor(1 / 0.07, device=device)
    ids = torch.arange(size, device=device) if with_ids else None
    ours, theirs = InfoNCELoss(), ClipLoss()

    def step(which: str):
        i, t = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
        if which == "ours":
            loss = ours(i, t, scale, ids, ids)["loss"]
        else:
            loss = theirs(i, t, scale)
        loss.backward()
        return loss.detach(), i.grad, t.grad

    a, b = step("ours"), step("open_clip")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):  # warm-up
        step("ours"), step("open_clip")
    times = {"ours": [], "open_clip": []}
    for _ in range(repeats):
        times["ours"].append(_time(lambda: step("ours"), sync))
        times["open_clip"].append(_time(lambda: step("open_clip"), sync))
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["open_clip"])
    return {
        "batch": size,
        "with_ids": with_ids,
        "loss_ours": float(a[0]),
        "loss_open_clip": float(b[0]),
        "loss_abs_diff": abs(float(a[0]) - float(b[0])),
        "grad_max_abs_diff": max(float((a[1] - b[1]).abs().max()), float((a[2] - b[2]).abs().max())),
        "ms_ours": 1000 * ours_s,
        "ms_open_clip": 1000 * theirs_s,
        "time_ratio": ours_s / theirs_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [run(size, args.dim, args.repeats, args.device, with_ids) for size in args.sizes for with_ids in (False, True)]
    print(f"InfoNCE vs open_clip ClipLoss, dim {args.dim}, {args.device}, {args.threads} threads, median of {args.repeats}")
    print(f"{'batch':>6} {'ids':>4} {'loss diff':>10} {'grad diff':>10} {'ours ms':>9} {'open_clip ms':>13} {'ratio':>6}")
    for r in rows:
        print(f"{r['batch']:>6} {'yes' if r['with_ids'] else 'no':>4} {r['loss_abs_diff']:>10.2e} {r['grad_max_abs_diff']:>10.2e} "
              f"{r['ms_ours']:>9.2f} {r['ms_open_clip']:>13.2f} {r['time_ratio']:>6.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
