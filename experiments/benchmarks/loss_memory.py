"""Peak memory per rank of the contrastive loss as the global batch grows: the local-loss path
(each rank: its ``B`` rows against the ``G`` gathered columns), the full global-by-global path
(each rank: all ``G x G`` logits), and the local path with chunked logits (``loss.chunk_size``).

Real distributed runs: for each world size ``W`` (``--worlds``) and mode, ``W`` processes join a
gloo group on this machine (one thread each) and run our ``InfoNCELoss`` forward + backward on
``B`` (``--per-rank``) random unit features of dim ``D`` per rank, so the global batch is
``G = W * B``, the way it grows when GPUs are added. Each rank measures:

* the peak RSS increase over the loss call: ``VmHWM`` reset to the current RSS through
  ``/proc/self/clear_refs`` just before it, the RSS at that moment subtracted from ``VmHWM``
  after ``backward`` (the features and the gathered columns' buffers are allocated before);
* the loss (its mean over ranks is the loss of the whole batch, the same in every mode) and the
  gradient of this rank's features (the same in every mode, up to float rounding);
* the wall time of forward + backward.

The ranks run with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then maps every allocation of 64 KiB
or more on its own and unmaps it when freed, so the RSS follows the live tensors. Each rank first
runs the same call once, unmeasured, so lazy imports (``torch.utils.checkpoint``
for the chunked mode) and thread pools are not counted.

The printed figures are the largest over ranks. On CUDA (``--device cuda`` with NCCL, one GPU per
rank) the peak is ``torch.cuda.max_memory_allocated`` instead.

Usage: python experiments/benchmarks/loss_memory.py [--worlds 1 2 4 8] [--per-rank 1024] [--dim 512]
       [--chunk-size 256] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mmresearch.utils.memory import peak_rss_mb, start_peak_rss

MODES = {
    "global": dict(local_loss=False),  # every rank: G x G logits
    "local": dict(local_loss=True),  # every rank: B x G logits (the default)
    "local_chunked": dict(local_loss=True),  # + chunk_size: chunk x G logits at a time, recomputed in backward
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, args: dict, out_dir: str) -> None:
    import warnings

    import torch.distributed as dist

    from mmresearch.modules.losses import InfoNCELoss

    warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)

    torch.set_num_threads(1)
    device = torch.device(f"cuda:{rank}" if args["device"] == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    b, d, mode = args["per_rank"], args["dim"], args["mode"]
    g = torch.Generator().manual_seed(1000 + rank)  # every rank its own slice of one global batch
    image = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=-1)
    text = torch.nn.functional.normalize(image + 0.5 * torch.randn(b, d, generator=g), dim=-1)
    image, text = image.to(device).requires_grad_(True), text.to(device).requires_grad_(True)
    scale = torch.tensor(1 / 0.07, device=device)
    chunk = args["chunk_size"] if mode == "local_chunked" else None
    loss_fn = InfoNCELoss(chunk_size=chunk, **MODES[mode])
    # warm-up: the same call once (lazy imports such as torch.utils.checkpoint, thread pools)
    loss_fn(image, text, scale)["loss"].backward()
    image.grad = text.grad = None
    dist.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = start_peak_rss(trim=False)
    start = time.perf_counter()
    loss = loss_fn(image, text, scale)["loss"]
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mb()
    seconds = time.perf_counter() - start
    total = loss.detach().clone()
    dist.all_reduce(total)
    result = dict(rank=rank, peak_mb=peak - base, seconds=seconds, loss=float(total) / world,
                  grad_image=image.grad.cpu(), grad_text=text.grad.cpu())
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def run_config(world: int, mode: str, args) -> dict:
    # glibc: every allocation >= 64 KiB its own mapping, returned on free (no dynamic threshold),
    # so the RSS follows the live tensors and the warm-up's freed memory is not reused unseen
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    options = dict(per_rank=args.per_rank, dim=args.dim, mode=mode, chunk_size=args.chunk_size, device=args.device)
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_rank, args=(world, _free_port(), options, out), nprocs=world, join=True, start_method="spawn")
        ranks = [torch.load(Path(out) / f"rank{r}.pt") for r in range(world)]
    g, b = world * args.per_rank, args.per_rank
    rows = {"global": g, "local": b, "local_chunked": min(args.chunk_size, b)}[mode]
    return dict(
        world=world, global_batch=g, mode=mode,
        peak_mb=max(r["peak_mb"] for r in ranks), seconds=max(r["seconds"] for r in ranks), loss=ranks[0]["loss"],
        logits_mb=rows * g * 4 / 2**20,  # one float32 [rows, G] logits matrix
        grads=[(r["grad_image"], r["grad_text"]) for r in ranks],
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4, 8], help="world sizes (processes on this machine)")
    p.add_argument("--per-rank", type=int, default=1024, help="pairs per rank (B)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk-size", type=int, default=256, help="rows per chunk of the chunked mode")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f"InfoNCE forward + backward, {args.per_rank} pairs per rank, dim {args.dim}, chunk {args.chunk_size}; "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, device {args.device}")
    print(f"{'world':>5} {'G':>6} {'mode':<14} {'peak MB/rank':>12} {'logits MB':>10} {'vs global':>9} {'s':>7} "
          f"{'loss':>9} {'grad diff':>9}")
    rows = []
    for world in args.worlds:
        reference = None
        for mode in args.modes:
            r = run_config(world, mode, args)
            grads = r.pop("grads")
            if reference is None:
                reference = (r, grads)
            diff = max(float((a - b).abs().max()) for ga, gb in zip(grads, reference[1]) for a, b in zip(ga, gb))
            r["grad_max_abs_diff_vs_first_mode"] = diff
            r["loss_diff_vs_first_mode"] = abs(r["loss"] - reference[0]["loss"])
            glob = next((x for x in rows if x["world"] == world and x["mode"] == "global"), None)
            r["peak_ratio_vs_global"] = r["peak_mb"] / glob["peak_mb"] if glob else None
            rows.append(r)
            ratio = f"{r['peak_ratio_vs_global']:.3f}" if r["peak_ratio_vs_global"] is not None else "-"
            print(f"{world:>5} {r['global_batch']:>6} {mode:<14} {r['peak_mb']:>12.1f} {r['logits_mb']:>10.1f} {ratio:>9} "
                  f"{r['seconds']:>7.2f} {r['loss']:>9.5f} {diff:>9.1e}", flush=True)
    result = dict(machine=dict(cpus=os.cpu_count(), platform=platform.platform(), python=sys.version.split()[0],
                               torch=torch.__version__, device=args.device),
                  per_rank=args.per_rank, dim=args.dim, chunk_size=args.chunk_size, rows=rows)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
