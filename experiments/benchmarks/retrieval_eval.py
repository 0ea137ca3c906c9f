"""Retrieval evaluation at COCO-5k size: ``retrieval_metrics`` vs the plain torchmetrics path.

Builds 5,000 images x 5 captions (dim 256; captions are their image's embedding plus noise, so
recall is far from 0 and 1), then times, each in a fresh child process:

- ``ours``: ``mmresearch.evaluation.retrieval.retrieval_metrics`` (default chunk size);
- ``torchmetrics``: the full score matrix, flattened, through ``RetrievalHitRate(top_k=1/5/10)``,
  ``RetrievalMRR`` and ``RetrievalMAP`` with ``indexes=``, in both directions, as a user of
  torchmetrics would do it.

The inputs are built once and saved; each child loads them, imports its library, then reports
wall time, peak RSS increase (the peak RSS, ``VmHWM``, reset to the current RSS just before the
method via ``/proc/self/clear_refs``, minus that RSS) and the metrics, compared key by key. ``ours`` runs ``--repeats`` times (fastest reported: the
machine may be shared); torchmetrics once (it takes minutes at full size).

The inputs make both methods well defined and bit-identical: embeddings are rounded to a grid
(integers / 2**k with at most ``sqrt(2**24 / dim)`` in magnitude), so every score is computed
exactly in float32 whatever the summation order or chunking, and the +3 shift that torchmetrics
needs (it ignores relevant items with scores <= 0 and casts scores to float32) is exact too.
Captions involved in a tie between a relevant and an irrelevant item (in either direction) are
redrawn until there is none, since torchmetrics breaks such ties by sort order.

    python experiments/benchmarks/retrieval_eval.py                      # full size
    python experiments/benchmarks/retrieval_eval.py --images 500 --out results.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmresearch.utils.memory import peak_rss_mb, start_peak_rss

KEYS = [f"{d}_{m}" for d in ("i2t", "t2i") for m in ("R@1", "R@5", "R@10", "MRR", "mAP")] + ["rsum"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=1024, help="retrieval_metrics' chunk_size")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every child")
    p.add_argument("--noise", type=float, default=4.5, help="caption noise norm relative to the image embedding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs of ours (fastest reported); torchmetrics runs once")
    p.add_argument("--skip-torchmetrics", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--child", choices=["ours", "torchmetrics"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--inputs", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_inputs(args):
    """Grid embeddings (exact float32 scores) without relevant/irrelevant ties; returns (img, txt, t2i, info)."""
    import torch
    import torch.nn.functional as F

    n_img, cpi, dim = args.images, args.captions_per_image, args.dim
    q_max = math.isqrt((1 << 24) // dim)  # |partial sums| <= dim * q_max**2 <= 2**24: exact in float32
    scale = 2.0 ** round(math.log2(q_max * math.sqrt(dim) / 4))  # ~4 standard deviations at q_max
    g = torch.Generator().manual_seed(args.seed)

    def grid(x):
        return torch.round(x * scale).clamp_(-q_max, q_max) / scale

    img = grid(F.normalize(torch.randn(n_img, dim, generator=g), dim=-1))
    t2i = torch.arange(n_img).repeat_interleave(cpi)

    def captions(rows):
        noise = torch.randn(rows.numel(), dim, generator=g) * (args.noise / math.sqrt(dim))
        return grid(F.normalize(img[t2i[rows]] + noise, dim=-1))

    txt = captions(torch.arange(t2i.numel()))
    redrawn, rounds = 0, 0
    while True:
        tied = _tied_captions(img, txt, t2i)
        if tied.numel() == 0:
            break
        rounds += 1
        if rounds > 50:
            raise RuntimeError("could not remove the ties; use a larger --dim or fewer images")
        redrawn += tied.numel()
        txt[tied] = captions(tied)
    info = {"grid_scale": scale, "grid_max": q_max, "captions_redrawn_for_ties": redrawn, "tie_rounds": rounds}
    return img, txt, t2i, info


def _tied_captions(img, txt, t2i, step: int = 256):
    """Captions whose relevant score ties with an irrelevant one, as t2i query or as i2t document."""
    import torch

    tied = torch.zeros(t2i.numel(), dtype=torch.bool)
    for start in range(0, txt.shape[0], step):  # t2i: a caption's own image vs the other images
        s = txt[start : start + step] @ img.T
        true = s.gather(1, t2i[start : start + step, None])
        tied[start : start + step] |= (s == true).sum(1) > 1
    n_img = img.shape[0]
    counts = torch.bincount(t2i, minlength=n_img)
    order = torch.argsort(t2i, stable=True)
    slot = torch.arange(t2i.numel()) - (torch.cumsum(counts, 0) - counts)[t2i[order]]
    positives = torch.full((n_img, int(counts.max())), -1, dtype=torch.long)
    positives[t2i[order], slot] = order  # [N_i, P] caption rows, -1 padding
    for start in range(0, n_img, step):  # i2t: an image's captions vs the other images' captions
        s = img[start : start + step] @ txt.T
        pos = positives[start : start + step]
        valid = pos >= 0
        ps = s.gather(1, pos.clamp_min(0))
        for p in range(pos.shape[1]):
            n_equal = (s == ps[:, p : p + 1]).sum(1) - ((ps == ps[:, p : p + 1]) & valid).sum(1)
            tied[pos[:, p][(n_equal > 0) & valid[:, p]]] = True
    return torch.nonzero(tied).flatten()


def run_ours(img, txt, t2i, args) -> dict:
    from mmresearch.evaluation.retrieval import retrieval_metrics

    return retrieval_metrics(img, txt, t2i, chunk_size=args.chunk_size)


def run_torchmetrics(img, txt, t2i, args) -> dict:
    import torch
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP, RetrievalMRR

    # shifted positive: torchmetrics ignores relevant items scored <= 0 (exact on the grid)
    sims = img @ txt.T + 3.0
    rel = t2i[None, :] == torch.arange(img.shape[0])[:, None]
    out = {}
    for direction in ("i2t", "t2i"):
        s, r = (sims, rel) if direction == "i2t" else (sims.T.contiguous(), rel.T.contiguous())
        preds, target = s.flatten(), r.flatten()
        indexes = torch.arange(s.shape[0])[:, None].expand_as(s).flatten()
        metrics = {f"R@{k}": RetrievalHitRate(top_k=k) for k in (1, 5, 10)}
        metrics.update({"MRR": RetrievalMRR(), "mAP": RetrievalMAP()})
        for name, metric in metrics.items():
            metric.update(preds, target, indexes=indexes)
            out[f"{direction}_{name}"] = float(metric.compute())
            metric.reset()
        del s, r, preds, target, indexes
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    inputs = torch.load(args.inputs)
    img, txt, t2i = inputs["img"], inputs["txt"], inputs["t2i"]
    if args.child == "torchmetrics":  # the exactness the comparison relies on
        assert torch.equal((img[:64] @ txt.T + 3.0) - 3.0, img[:64] @ txt.T)
    method = run_ours if args.child == "ours" else run_torchmetrics
    if args.child == "ours":
        import mmresearch.evaluation.retrieval  # noqa: F401  (imported before the baseline)
    else:
        import torchmetrics.retrieval  # noqa: F401
    times, load, base = [], os.getloadavg()[0], start_peak_rss(trim=False)
    for _ in range(args.repeats if args.child == "ours" else 1):
        start = time.perf_counter()
        metrics = method(img, txt, t2i, args)
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "time_s": min(times), "times_s": times, "peak_rss_increase_mb": peak_rss_mb() - base,
        "rss_before_mb": base, "load_avg_1min_before": load, "metrics": metrics,
    }))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(args)
        return {}
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    img, txt, t2i, info = build_inputs(args)
    info["build_s"] = time.perf_counter() - start
    forwarded = [f"--chunk-size={args.chunk_size}", f"--threads={args.threads}", f"--repeats={args.repeats}"]
    methods = ["ours"] + ([] if args.skip_torchmetrics else ["torchmetrics"])
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.pt"
        torch.save({"img": img, "txt": txt, "t2i": t2i}, inputs)
        for method in methods:  # a fresh process each: its own peak RSS, no shared warm-up
            proc = subprocess.run(
                [sys.executable, __file__, *forwarded, f"--inputs={inputs}", "--child", method],
                capture_output=True, text=True, env=env, cwd=root,
            )
            if proc.returncode != 0:
                sys.exit(f"{method} failed:\n{proc.stderr}")
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])

    n_txt = args.images * args.captions_per_image
    ours = results["ours"]
    report = {
        "config": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
        "scores": f"{args.images} x {n_txt} = {args.images * n_txt:,}",
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "inputs": info,
        "results": results,
    }
    print(f"{args.images} images x {args.captions_per_image} captions, dim {args.dim}: {args.images * n_txt:,} scores; "
          f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")
    print(f"inputs: grid 1/{info['grid_scale']:g}, {info['captions_redrawn_for_ties']} captions redrawn in "
          f"{info['tie_rounds']} rounds to remove relevant/irrelevant ties (built in {info['build_s']:.0f} s)")
    print(f"{'method':<14}{'time (s)':>10}{'peak RSS +MB':>15}{'load avg':>10}")
    for method, r in results.items():
        extra = f"   (best of {len(r['times_s'])}: {', '.join(f'{t:.2f}' for t in r['times_s'])})" if len(r["times_s"]) > 1 else ""
        print(f"{method:<14}{r['time_s']:>10.2f}{r['peak_rss_increase_mb']:>15.0f}{r['load_avg_1min_before']:>10.2f}{extra}")
    if "torchmetrics" in results:
        tm = results["torchmetrics"]
        report["speedup"] = tm["time_s"] / ours["time_s"]
        diffs = {k: abs(ours["metrics"][k] - tm["metrics"][k]) for k in KEYS}
        report["max_abs_diff"] = max(diffs.values())
        report["max_abs_diff_key"] = max(diffs, key=diffs.get)
        report["memory_ratio"] = tm["peak_rss_increase_mb"] / max(ours["peak_rss_increase_mb"], 1.0)
        print(f"speedup (torchmetrics time / ours): {report['speedup']:.1f}x; "
              f"peak memory ratio: {report['memory_ratio']:.1f}x")
        print(f"metrics agree: max abs difference {report['max_abs_diff']:.2e} ({report['max_abs_diff_key']}; "
              "torchmetrics computes and returns float32, ours float64)")
        print(f"{'metric':<10}{'ours':>12}{'torchmetrics':>14}")
        for k in KEYS:
            print(f"{k:<10}{ours['metrics'][k]:>12.6f}{tm['metrics'][k]:>14.6f}")
    else:
        print("metrics: " + ", ".join(f"{k} {ours['metrics'][k]:.4f}" for k in KEYS))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
