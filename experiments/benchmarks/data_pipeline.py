"""Data pipeline against the training step: is the loader ever the bottleneck of a run?

For each pipeline (case) the training data module and model are built from the Hydra config
exactly as ``mmr-train`` builds them (same overrides, ``build`` / ``build_model``), and three
rates are measured in one process, one after the other, in samples (pairs) per second:

- (a) loader alone: ``--batches`` batches of the training ``DataLoader`` with its configured
  ``num_workers``, timed after ``--warmup`` batches (worker start-up falls in the warm-up).
- (b) training step alone: forward (``model(batch)["loss"]``) + backward + optimizer step (the
  model's own optimizer, ``model.make_optimizer()``) + temperature
  clamp, on 4 batches fetched beforehand and reused, at the run's precision (``bf16-mixed``:
  forward under ``torch.autocast("cpu", dtype=torch.bfloat16)``, as Lightning does on CPU).
- (c) training with the loader: the loop of (b) taking each batch from a fresh loader, so the
  workers decode while the model trains (as in a real run); warm-up as in (a).

``a/b`` is the loader's headroom (> 1: the loader alone outruns the step) and ``c/b`` the share of
the compute-only speed that training keeps with the loader running alongside. The verdict is "loader
is not the bottleneck" when ``c/b >= 0.9`` (``--threshold``). Rates are samples over the total time
of the timed batches; ``c/b med`` uses the median batch times instead (less sensitive to other jobs
on a shared CPU). ``--rounds`` repeats the three measurements in the order a b c, c b a, ... (linear
drift cancels) and pools them. Loaders are iterated across epoch ends the way the fit loop does
(``set_epoch``, then a new iterator, which restarts the workers when ``persistent_workers`` is
off); the table's ``ep`` column counts the epochs started in (c)'s timed batches. The ``other``
column is the most CPU that other processes took during any one measurement (machine-wide busy
time from /proc/stat minus this process's and its joined workers'): on a shared machine, figures
taken while it is high are not to be trusted.

Cases:
- ``shapes``: the default run (``mmr-train`` without overrides): built-in shapes data, its batch
  size and ``num_workers``, resnet_tiny + bert_tiny, ``trainer.precision`` of conf/trainer/default.yaml.
- ``folder``: ``experiment=lit_flickr8k``: flickr8k-mini JPEGs from its image folder
  (``data=flickr8k_mini`` with the experiment's data settings: 224 px, batch 64, 2 workers, every
  caption of the 700 training images), frozen EfficientNet-Lite0 + MiniLM (pip weights, offline).
- ``webdataset``: the same training split written to tar shards in a temporary directory with
  ``mmr-write-shards`` (``mmresearch.data.write_shards.main``; a multiple of the worker count of
  equal shards), read through ``data=webdataset`` (``num_samples`` from the manifest: one sample per
  image, one random caption each), same model and data settings as ``folder``.

Usage: python experiments/benchmarks/data_pipeline.py [--cases shapes folder webdataset] [--batches 10]
       [--warmup 3] [--rounds 2] [--threads 2] [--num-workers N] [--threshold 0.9]
       [--override KEY=VALUE ...] [--shard-dir DIR] [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the pretrained towers come from pip packages
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from mmresearch.models.builder import build_model  # noqa: E402
from mmresearch.utils.instantiate import build  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(REPO / "conf")
CASES = ("shapes", "folder", "webdataset")
LIT = "experiment=lit_flickr8k"
PREFETCHED = 4  # batches held in memory for (b)


# ----------------------------------------------------------------------------------------------
# Configs and data


def compose_cfg(overrides: Sequence[str]):
    """The composed ``train`` config; ``paths.root_dir`` is the repository (so the default
    ``paths.data_dir``, ../shared/data, does not depend on the working directory)."""
    base = [] if os.environ.get("PROJECT_ROOT") else [f"paths.root_dir={REPO}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=base + list(overrides))


def _write_pairs_csv(path: Path, items) -> int:
    """``image,caption`` rows, one per caption; returns the number of rows."""
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for item in items:
            for caption in item.captions:
                writer.writerow([item.image, caption])
                rows += 1
    return rows


def prepare_webdataset(workdir: Path, num_workers: int) -> Dict[str, Any]:
    """Write the ``folder`` case's training split as shards under ``workdir`` with
    ``mmr-write-shards``, and its val/test images as CSVs; returns the Hydra overrides of the
    ``webdataset`` case and what was written."""
    from mmresearch.data.image_text import _source, read_source, split_by_image
    from mmresearch.data.write_shards import main as write_shards_main

    cfg = compose_cfg([LIT])
    spec = _source(cfg.data.train, "train", cfg.data.get("root"))
    ann = read_source(spec, "train")
    split = dict(cfg.data.split)
    seed = int(split.pop("seed", 0))
    drawn = split_by_image(ann.items, split, seed)
    train = drawn["train"]
    workdir.mkdir(parents=True, exist_ok=True)
    csvs = {name: workdir / f"{name}.csv" for name in ("train", "val", "test")}
    pairs = _write_pairs_csv(csvs["train"], train)
    for name in ("val", "test"):
        _write_pairs_csv(csvs[name], drawn[name])
    # equal shards, a multiple of the workers, so that every worker reads the same number of samples
    shards = 2 * max(1, num_workers)
    per_shard = math.ceil(len(train) / shards)
    out = workdir / "shards"
    started = time.perf_counter()
    write_shards_main(["--format", "csv", "--annotations", str(csvs["train"]), "--image-root", spec["image_root"],
                       "--output", str(out), "--samples-per-shard", str(per_shard), "--sep", ","])
    seconds = time.perf_counter() - started
    manifest = json.loads((out / "manifest.json").read_text())
    overrides = [
        LIT, "data=webdataset",
        f"data.train.urls='{manifest['urls']}'", f"data.train.num_samples={manifest['num_samples']}",
    ]
    for name in ("val", "test"):
        overrides += [f"data.{name}.path='{csvs[name]}'", f"data.{name}.image_root='{spec['image_root']}'", f"data.{name}.sep=','"]
    return {"overrides": overrides, "manifest": manifest, "train_images": len(train), "train_pairs": pairs,
            "shard_dir": str(out), "write_s": seconds}


class LoaderStream:
    """Batches of a training loader without end: at each epoch end ``set_epoch(epoch + 1)`` (as
    the fit loop does) and a new iterator (workers restart unless persistent)."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.epoch = -1
        self.epochs_started = 0
        self._it: Optional[Iterator] = None

    def _start(self) -> None:
        self.epoch += 1
        sampler = getattr(getattr(self.loader, "batch_sampler", None), "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self._it = iter(self.loader)
        self.epochs_started += 1

    def __next__(self):
        if self._it is None:
            self._start()
        try:
            return next(self._it)
        except StopIteration:
            self._stop()
            self._start()
            return next(self._it)

    def _stop(self) -> None:
        shutdown = getattr(self._it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._it = None

    def close(self) -> None:
        self._stop()


# ----------------------------------------------------------------------------------------------
# Measurements


def autocast_for(precision: Any) -> Callable[[], Any]:
    """The forward context of Lightning's CPU precision plugins."""
    p = str(precision)
    if p in ("bf16-mixed", "bf16"):
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    if p in ("32-true", "32"):
        return contextlib.nullcontext
    raise ValueError(f"trainer.precision={p!r} is not supported by this benchmark (bf16-mixed or 32-true)")


def cpu_snapshot() -> Optional[tuple]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its reaped
    children, e.g. finished loader workers, wall clock); None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    return busy, sum(os.times()[:4]), time.perf_counter()


def other_cpu_share(before: Optional[tuple], after: Optional[tuple]) -> Optional[float]:
    """The share of all CPUs that other processes used between two snapshots (this process and
    the workers it started and joined in between excluded): a measure of a shared machine's noise."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    other = (after[0] - before[0]) - (after[1] - before[1])
    # clock ticks (10 ms) make it rough over short spans: clipped to [0, 1]
    return min(1.0, max(0.0, other / ((after[2] - before[2]) * (os.cpu_count() or 1))))


def num_samples(batch) -> int:
    return int(batch.num_images)


def _timed(fetch: Callable[[], int], warmup: int, batches: int, on_start: Callable[[], None] = lambda: None) -> Dict[str, Any]:
    """``warmup`` untimed calls of ``fetch`` (returns the samples it handled), then ``batches``
    timed ones: the samples, the seconds and the interval of every timed call."""
    for _ in range(warmup):
        fetch()
    on_start()
    samples, intervals = 0, []
    start = last = time.perf_counter()
    for _ in range(batches):
        samples += fetch()
        now = time.perf_counter()
        intervals.append(now - last)
        last = now
    return {"samples": samples, "seconds": last - start, "intervals": intervals}


def time_loader(stream: LoaderStream, warmup: int, batches: int) -> Dict[str, Any]:
    """(a): batches of the loader, nothing else."""
    mark = {}
    out = _timed(lambda: num_samples(next(stream)), warmup, batches, lambda: mark.setdefault("epochs", stream.epochs_started))
    out["epochs_started"] = stream.epochs_started - mark["epochs"]
    return out


def train_steps(model, optimizer, autocast, next_batch: Callable[[], Any], warmup: int, batches: int,
                on_start: Callable[[], None] = lambda: None) -> Dict[str, Any]:
    """(b)/(c): ``warmup`` then ``batches`` timed training steps on ``next_batch()``; what a
    Lightning step does: forward to the loss under the precision's autocast, backward,
    optimizer step, temperature clamp."""
    temperature = getattr(model, "temperature", None)

    def step() -> int:
        batch = next_batch()
        with autocast():
            loss = model(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if temperature is not None:
            temperature.clamp_()
        return num_samples(batch)

    model.train()
    return _timed(step, warmup, batches, on_start)


def model_optimizer(model):
    """The optimizer ``configure_optimizers`` makes (without the scheduler): ``make_optimizer``,
    weight-decay groups without the frozen parameters, ``fused: auto`` resolved."""
    return model.make_optimizer()


def _combine(runs: List[Dict[str, Any]], batch_size: int) -> Dict[str, Any]:
    """Rounds of one measurement: rate over all timed batches, and the rate of the median batch."""
    samples, seconds = sum(r["samples"] for r in runs), sum(r["seconds"] for r in runs)
    intervals = [x for r in runs for x in r["intervals"]]
    return {"samples": samples, "seconds": seconds, "rate": samples / seconds,
            "median_rate": batch_size / statistics.median(intervals), "rounds": runs}


def verdict(ratio_ab: float, ratio_cb: float, ratio_cb_median: float, workers: int, epochs: int, threshold: float) -> str:
    """The answer for one case, with the likeliest reason when the loader is the bottleneck."""
    if ratio_cb >= threshold:
        return "loader is not the bottleneck"
    kept = f"training keeps {ratio_cb:.0%} of the step's speed"
    if ratio_ab < 1:
        return f"loader IS the bottleneck: slower than the step ({kept})"
    if workers == 0:
        return f"loader IS the bottleneck: loading in the main process adds to every step ({kept})"
    if epochs and ratio_cb_median >= threshold:
        return (f"loader IS the bottleneck at epoch starts: workers restart and refill ({kept}; "
                f"{ratio_cb_median:.0%} from median steps)")
    return f"loader IS the bottleneck: fast enough alone, but its workers take CPU from the step ({kept})"


def run_case(name: str, overrides: List[str], args, notes: List[str]) -> Dict[str, Any]:
    if args.num_workers is not None:
        overrides = overrides + [f"data.num_workers={args.num_workers}"]
    overrides = overrides + list(args.override)
    cfg = compose_cfg(overrides)
    L.seed_everything(int(cfg.seed), verbose=False)
    started = time.perf_counter()
    tokenizer = build(cfg, "tokenizer")
    datamodule = build(cfg, "data", tokenizer=tokenizer)
    loader = datamodule.train_dataloader()  # reads or generates the training split
    setup_s = time.perf_counter() - started
    started = time.perf_counter()
    model = build_model(cfg, tokenizer, datamodule)
    model_s = time.perf_counter() - started
    optimizer = model_optimizer(model)
    autocast = autocast_for(cfg.trainer.precision)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    batch_size, workers = int(cfg.data.batch_size), int(cfg.data.num_workers)
    info = {
        "overrides": overrides, "notes": notes, "batch_size": batch_size, "num_workers": workers,
        "image_size": int(datamodule.image_size), "precision": str(cfg.trainer.precision), "batches_per_epoch": len(loader),
        "image_encoder": str(cfg.image_encoder.get("name", cfg.image_encoder._target_)),
        "text_encoder": str(cfg.text_encoder.get("name_or_path", cfg.text_encoder._target_)),
        "parameters": total, "trainable_parameters": trainable, "setup_s": setup_s, "model_build_s": model_s,
    }
    print(f"[{name}] {len(loader)} batches/epoch of {batch_size}, {workers} workers, {info['image_size']} px, "
          f"{info['precision']}; {trainable:,} of {total:,} parameters trained; set-up {setup_s:.1f} s, model {model_s:.1f} s",
          flush=True)

    held: List[Any] = []

    def measure_a() -> Dict[str, Any]:
        stream = LoaderStream(loader)
        out = time_loader(stream, args.warmup, args.batches)
        if not held:  # the batches of (b), taken after the timed part
            held.extend(next(stream) for _ in range(PREFETCHED))
        stream.close()
        return out

    def measure_b() -> Dict[str, Any]:
        count = iter(range(1 << 62))
        return train_steps(model, optimizer, autocast, lambda: held[next(count) % len(held)], args.warmup, args.batches)

    def measure_c() -> Dict[str, Any]:
        stream = LoaderStream(datamodule.train_dataloader())
        mark = {}
        out = train_steps(model, optimizer, autocast, lambda: next(stream), args.warmup, args.batches,
                          lambda: mark.setdefault("epochs", stream.epochs_started))
        out["epochs_started"] = stream.epochs_started - mark["epochs"]
        stream.close()
        return out

    measures = {"a": measure_a, "b": measure_b, "c": measure_c}
    labels = {"a": "(a) loader alone", "b": "(b) step alone", "c": "(c) step with loader"}
    runs: Dict[str, List[Dict[str, Any]]] = {"a": [], "b": [], "c": []}
    for r in range(args.rounds):
        for key in ("a", "b", "c") if r % 2 == 0 else ("c", "b", "a"):  # a b c c b a ...: drift cancels
            load, before = os.getloadavg()[0], cpu_snapshot()
            out = measures[key]()
            out["load_avg"], out["other_cpu"] = load, other_cpu_share(before, cpu_snapshot())
            runs[key].append(out)
            other = "" if out["other_cpu"] is None else f", other processes {out['other_cpu']:.0%} of the CPUs"
            print(f"[{name}] round {r + 1}: {labels[key]:<21} {out['samples'] / out['seconds']:8.1f} samples/s "
                  f"(load avg {load:.2f}{other})", flush=True)
    a, b, c = (_combine(runs[k], batch_size) for k in "abc")
    c["epochs_started"] = sum(run.get("epochs_started", 0) for run in runs["c"])
    ratio_ab, ratio_cb, ratio_cb_median = a["rate"] / b["rate"], c["rate"] / b["rate"], c["median_rate"] / b["median_rate"]
    shares = [run["other_cpu"] for k in "abc" for run in runs[k] if run["other_cpu"] is not None]
    return {**info, "loader_samples_per_s": a["rate"], "step_samples_per_s": b["rate"], "train_samples_per_s": c["rate"],
            "loader_over_step": ratio_ab, "train_over_step": ratio_cb,
            "train_over_step_median": ratio_cb_median, "other_cpu_max": max(shares) if shares else None,
            "bottleneck": ratio_cb < args.threshold,
            "verdict": verdict(ratio_ab, ratio_cb, ratio_cb_median, workers, c["epochs_started"], args.threshold),
            "detail": {"a": a, "b": b, "c": c}}


# ----------------------------------------------------------------------------------------------


def machine_info(threads: int) -> Dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(), "threads": threads,
            "gpu": torch.cuda.is_available()}


def format_table(results: Dict[str, Dict[str, Any]], threshold: float) -> str:
    head = (f"{'case':<11} {'batch':>5} {'wkrs':>4} {'px':>4} {'(a) loader':>10} {'(b) step':>9} {'(c) train':>9} "
            f"{'a/b':>6} {'c/b':>5} {'c/b med':>7} {'ep':>3} {'other':>5}")
    lines = ["samples/s; a/b: loader headroom, c/b: share of the step's speed kept with the loader running "
             "(med: from median batch times); ep: epochs started during (c); other: the most CPU other processes "
             "took during a measurement (share of all CPUs)", head]
    for name, r in results.items():
        lines.append(f"{name:<11} {r['batch_size']:>5} {r['num_workers']:>4} {r['image_size']:>4} {r['loader_samples_per_s']:>10.1f} "
                     f"{r['step_samples_per_s']:>9.1f} {r['train_samples_per_s']:>9.1f} {r['loader_over_step']:>6.2f} "
                     f"{r['train_over_step']:>5.2f} {r['train_over_step_median']:>7.2f} {r['detail']['c']['epochs_started']:>3} "
                     f"{'-' if r['other_cpu_max'] is None else format(r['other_cpu_max'], '.0%'):>5}")
    lines.append(f"verdict (not the bottleneck when c/b >= {threshold:g}):")
    lines += [f"  {name:<11} {r['verdict']}" for name, r in results.items()]
    return "\n".join(lines)


def parse_cases(values: Sequence[str]) -> List[str]:
    cases = [c for v in values for c in v.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {list(CASES)}")
    return list(dict.fromkeys(cases))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help=f"any of {', '.join(CASES)} (space or comma separated)")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per measurement and round")
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing (worker start-up included)")
    parser.add_argument("--rounds", type=int, default=2, help="repeat the measurements, in order a b c, c b a, ...")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of the main process")
    parser.add_argument("--num-workers", type=int, default=None, help="data.num_workers for every case (default: each config's)")
    parser.add_argument("--threshold", type=float, default=0.9, help="c/b at or above which the loader is not the bottleneck")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every case, e.g. data.train_size=1024")
    parser.add_argument("--shard-dir", default=None, help="webdataset: write shards here and keep them (default: a temporary directory)")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--batches and --rounds must be >= 1, --warmup >= 0")
    cases = parse_cases(args.cases)
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads)
    print(f"{machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, {args.threads} threads; "
          f"{args.rounds} round(s) of {args.batches} timed batches after {args.warmup} warm-up", flush=True)
    results: Dict[str, Dict[str, Any]] = {}
    tmp = None
    try:
        for name in cases:
            started = time.perf_counter()
            if name == "shapes":
                results[name] = run_case(name, [], args, ["mmr-train defaults"])
            elif name == "folder":
                results[name] = run_case(name, [LIT], args, ["experiment=lit_flickr8k: data=flickr8k_mini from its image folder"])
            else:
                if args.shard_dir:
                    workdir = Path(args.shard_dir)
                else:
                    tmp = tempfile.mkdtemp(prefix="mmr-bench-shards-")
                    workdir = Path(tmp)
                workers = args.num_workers if args.num_workers is not None else int(compose_cfg([LIT]).data.num_workers)
                prep = prepare_webdataset(workdir, workers)
                m = prep["manifest"]
                note = (f"{m['num_samples']} samples ({prep['train_pairs']} captions) in {len(m['shards'])} shards of "
                        f"{math.ceil(m['num_samples'] / len(m['shards']))}, written in {prep['write_s']:.1f} s")
                print(f"[webdataset] {note}", flush=True)
                results[name] = run_case(name, prep["overrides"], args, [note])
                results[name]["shards"] = {k: v for k, v in prep.items() if k != "overrides"}
            results[name]["case_s"] = time.perf_counter() - started
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(format_table(results, args.threshold))
    report = {"args": vars(args), "machine": machine, "threshold": args.threshold, "cases": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
