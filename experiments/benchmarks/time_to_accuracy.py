"""Time to accuracy: the training wall time the default ``mmr-train`` needs to reach text-to-image
R@1 >= 0.9 on the built-in test split, for our defaults and for a baseline setting, one after the
other on the same machine.

Each setting is a real ``mmr-train`` run (a subprocess; the same command a user types) with
``callbacks=time_to_accuracy`` (``mmresearch/callbacks/time_to_accuracy.py``): after every epoch
the test split is evaluated with the test loop's metric, and the training time so far (validation
included, these checks excluded) is recorded; the run stops at the target. ``--epochs`` sets
``trainer.max_epochs`` (the learning-rate schedule spans it), so a recipe that needs more than the
default 4 epochs can still reach the target.

Settings (``--settings``):
  ours      the defaults as shipped
  baseline  the optimizer before ``optimizer.fused=auto``: ``optimizer.fused=null`` (torch's default,
            a per-parameter loop on the CPU); everything else as shipped

Usage: python experiments/benchmarks/time_to_accuracy.py [--settings ours baseline] [--epochs 12]
       [--target 0.9] [--seed 0] [--override KEY=VALUE ...] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "ours": [],
    "baseline": ["optimizer.fused=null"],
}


def run_setting(name: str, args, workdir: Path) -> dict:
    out_dir = workdir / name
    overrides = [
        "callbacks=time_to_accuracy", f"callbacks.time_to_accuracy.target={args.target}", f"trainer.max_epochs={args.epochs}",
        f"seed={args.seed}", "test=false", "callbacks.evaluation_plots=null", "callbacks.zero_shot=null",
        "callbacks.linear_probe=null", "trainer.enable_progress_bar=false", f"hydra.run.dir={out_dir}",
        *SETTINGS[name], *args.override,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mmresearch.train", *overrides], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"setting {name}: mmr-train failed:\n{proc.stderr[-4000:]}")
    record = json.loads((out_dir / "time_to_accuracy.json").read_text())
    return dict(name=name, overrides=overrides, command_seconds=wall, **record)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--epochs", type=int, default=12, help="trainer.max_epochs (the schedule spans it)")
    p.add_argument("--target", type=float, default=0.9, help="test t2i R@1 to reach")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="extra override for every setting")
    p.add_argument("--workdir", type=Path, default=None, help="run directories (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f"time to test t2i R@1 >= {args.target}: mmr-train, up to {args.epochs} epochs, seed {args.seed}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        rows = [run_setting(name, args, workdir) for name in args.settings]
    print(f"{'setting':<9} {'reached':>7} {'train s to target':>17} {'epoch':>5} {'step':>5} {'t2i R@1 per epoch (train s)'}")
    for r in rows:
        reached = r["reached"]
        curve = ", ".join(f"{c['t2i_R@1']:.3f} ({c['train_seconds']:.0f})" for c in r["checks"])
        print(f"{r['name']:<9} {'yes' if reached else 'no':>7} {reached['train_seconds'] if reached else float('nan'):>17.1f} "
              f"{reached['epoch'] if reached else '-':>5} {reached['step'] if reached else '-':>5} {curve}")
    by_name = {r["name"]: r for r in rows}
    ratio = None
    if "ours" in by_name and "baseline" in by_name and by_name["ours"]["reached"] and by_name["baseline"]["reached"]:
        ratio = by_name["ours"]["train_seconds_to_target"] / by_name["baseline"]["train_seconds_to_target"]
        print(f"ratio ours / baseline: {ratio:.3f}")
    result = dict(machine=dict(cpus=os.cpu_count(), platform=platform.platform(), python=sys.version.split()[0]),
                  target=args.target, epochs=args.epochs, seed=args.seed, settings=rows, ratio_ours_to_baseline=ratio)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
