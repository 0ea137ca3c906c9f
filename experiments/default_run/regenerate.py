"""Regenerate the default run's results table in the READMEs from a real run.

Runs the default ``mmr-train`` (or reads an existing run directory), reads its ``results.json`` and
writes the results block between the marker lines

    <!-- default-run:begin -->
    <!-- default-run:end -->

of ``README.md`` ("## Results") and ``experiments/default_run/README.md``, replacing only what lies
between them (running it twice on one run changes nothing). The block holds the test retrieval
table, rsum, the after-test evaluations, the commit, the wall time, the machine and torch's thread
count. When the script runs the training itself it also times the whole command and samples the
machine's load while it runs (``<run dir>/command.json``), so a wall time measured while other jobs
shared the CPU says so. Ends with a one-line summary.

The metrics are bit-identical on reruns at one commit with one torch thread count; another thread
count (``num_threads``) changes the order of float reductions and so the figures, hence the count in
the block. Do not add ``num_threads`` for the published run: it is torch's default.

Usage:
  python experiments/default_run/regenerate.py                           # mmr-train (minutes), then write
  python experiments/default_run/regenerate.py --run-dir outputs/train/<run>    # write from a finished run
  python experiments/default_run/regenerate.py --readme my.md -- data.train_size=256   # extra overrides (stated in the block)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
READMES = (REPO / "README.md", REPO / "experiments" / "default_run" / "README.md")
BEGIN = "<!-- default-run:begin -->"
END = "<!-- default-run:end -->"
COMMAND_FILE = "command.json"
GENERATED = "<!-- written by experiments/default_run/regenerate.py from the run's results.json: rerun it, do not edit by hand -->"
# kinds of the after-test evaluations' metrics, in the order the block shows them
COMPOSITIONALITY = ("colour", "size", "shape", "relation")
LABEL_KINDS = ("colour", "shape", "count")


class TableError(ValueError):
    """A run directory or README the script cannot use; the message names the file."""


def load_run(run_dir: Path) -> Dict:
    """``results.json`` of ``run_dir`` plus, when present, ``command.json`` (under ``"command"``)
    and the number of optimizer steps from ``csv/metrics.csv`` (under ``"steps"``)."""
    path = Path(run_dir) / "results.json"
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TableError(f"{path}: not a readable results.json ({err})") from err
    missing = [k for k in ("t2i_R@1", "i2t_R@1", "rsum") if f"test/{k}" not in run.get("metrics", {})]
    if missing:
        raise TableError(f"{path}: no test metrics {', '.join('test/' + k for k in missing)} (was the run tested?)")
    command = Path(run_dir) / COMMAND_FILE
    run["command"] = json.loads(command.read_text()) if command.is_file() else None
    run["steps"] = _steps(Path(run_dir) / "csv" / "metrics.csv")
    return run


def _steps(csv_path: Path) -> Optional[int]:
    """Optimizer steps of the run: the last logged training step + 1 (None without the CSV log)."""
    if not csv_path.is_file():
        return None
    with csv_path.open(newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss") and row.get("step")]
    return max(steps) + 1 if steps else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _setting(run: Dict) -> str:
    """What was run: the command with its overrides, the schedule and the test split."""
    cfg = run.get("config", {})
    data, trainer = cfg.get("data", {}), cfg.get("trainer", {})
    overrides = (run.get("hydra") or {}).get("overrides") or []
    command = "`mmr-train " + " ".join(overrides) + "`" if overrides else "`mmr-train` (no arguments)"
    parts = []
    if "batch_size" in data and "train_size" in data and "max_epochs" in trainer:
        parts.append(f"batch {data['batch_size']}, {data['train_size']:,} training images x {trainer['max_epochs']} epochs"
                     + (f" = {run['steps']:,} steps" if run.get("steps") else ""))
    if "precision" in trainer:
        parts.append(f"`{trainer['precision']}`")
    if "seed" in cfg:
        parts.append(f"seed {cfg['seed']}")
    if "test_size" in data:
        per = f" with {data['captions_per_image']} captions each" if "captions_per_image" in data else ""
        parts.append(f"tested on {data['test_size']:,} images{per}")
    return command + ": " + "; ".join(parts) + "."


def _short(sha: Optional[str]) -> str:
    """``abc1234``, ``abc1234 with uncommitted changes`` or ``an unknown commit``."""
    if not sha:
        return "an unknown commit"
    return f"`{sha.removesuffix('-dirty')[:7]}`" + (" with uncommitted changes" if sha.endswith("-dirty") else "")


def _commit(run: Dict) -> str:
    """The commit ``results.json`` names (read when the run set up, so the code it imported); when
    regenerate.py started the run at another commit, that one too (the checkout moved meanwhile)."""
    at_setup = run.get("git_commit")
    at_start = (run.get("command") or {}).get("commit_at_start")
    text = f"commit {_short(at_setup)}"
    if at_start and at_setup and at_start.removesuffix("-dirty") != at_setup.removesuffix("-dirty"):
        text += f" (the checkout was at {_short(at_start)} when regenerate.py started the run)"
    return text


def _machine(run: Dict) -> str:
    machine, cmd = run.get("machine", {}), run.get("command") or {}
    parts = []
    if cmd.get("cpu_count"):
        parts.append(f"{cmd['cpu_count']} CPUs" + (f" ({cmd['cpu_model']})" if cmd.get("cpu_model") else ""))
    parts.append(f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU")
    torch_version = (run.get("versions") or {}).get("torch")
    if torch_version:
        parts.append(f"torch {torch_version}")
    if machine.get("torch_threads"):
        parts.append(f"{machine['torch_threads']} torch threads")
    if machine.get("platform"):
        parts.append(machine["platform"])
    return ", ".join(parts)


def _times(run: Dict) -> str:
    cmd = run.get("command") or {}
    text = f"Wall time: {run['wall_time_s']:.0f} s inside the run (`results.json` `wall_time_s`)"
    if not cmd:
        return text + "; the whole command's time and the machine's load were not recorded (run not started by regenerate.py)."
    if cmd.get("command_seconds"):
        text += f", {_duration(cmd['command_seconds'])} for the whole command"
    if cmd.get("mean_load") is not None:
        threads = (run.get("machine") or {}).get("torch_threads") or 1
        busy = cmd["mean_load"] > threads + 1
        text += (f"; mean 1-minute load average during the run {cmd['mean_load']:.1f} on {cmd['cpu_count']} CPUs (the run alone:"
                 f" about {threads})" + (": measured while other jobs shared the CPUs, so slower than on a quiet machine" if busy else ""))
    return text + "."


def _evaluations(metrics: Dict[str, float], cfg: Dict) -> Optional[str]:
    """The after-test evaluations (compositionality, zero-shot, linear probe), chance in brackets."""
    data = cfg.get("data", {})
    classes = {"colour": len(data.get("colours") or []), "shape": len(data.get("shapes") or []),
               "count": sum(1 for w in data.get("count_weights") or [] if w > 0)}
    chance = {k: f" ({1 / n:.3g})" if n else "" for k, n in classes.items()}
    parts = []
    if "test/comp_acc" in metrics:
        kinds = ", ".join(f"{k} {metrics[f'test/comp_acc_{k}']:.3f}" for k in COMPOSITIONALITY if f"test/comp_acc_{k}" in metrics)
        parts.append(f"compositionality {metrics['test/comp_acc']:.3f} (0.5" + (f"; {kinds})" if kinds else ")"))
    zero_shot = [f"{k} {metrics[f'test/zeroshot_{k}_top1']:.3f}{chance[k]}" for k in LABEL_KINDS if f"test/zeroshot_{k}_top1" in metrics]
    if zero_shot:
        parts.append("zero-shot top-1 " + ", ".join(zero_shot))
    probe = [f"{k} {metrics[f'test/probe_{k}_acc']:.3f}" for k in LABEL_KINDS if f"test/probe_{k}_acc" in metrics]
    if probe:
        parts.append("linear probe " + ", ".join(probe))
    if not parts:
        return None
    return "The same run's other test metrics (the after-test evaluations; chance in brackets): " + "; ".join(parts) + "."


def render_block(run: Dict) -> str:
    """The Markdown between the markers (without them) for one loaded run."""
    m = run["metrics"]
    rows = []
    for direction, label in (("t2i", "text-to-image"), ("i2t", "image-to-text")):
        cells = [f"{m[f'test/{direction}_{k}']:.4f}" if f"test/{direction}_{k}" in m else "-" for k in ("R@1", "R@5", "R@10", "MRR", "mAP")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    lines = [
        GENERATED,
        f"{_setting(run)} Measured at {_commit(run)}; machine: {_machine(run)}.",
        "",
        "| | R@1 | R@5 | R@10 | MRR | mAP |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"`rsum` {m['test/rsum']:.3f}. {_times(run)}",
    ]
    evaluations = _evaluations(m, run.get("config", {}))
    if evaluations:
        lines += ["", evaluations]
    return "\n".join(lines)


def replace_block(text: str, block: str, name: str) -> str:
    """``text`` with the lines between the begin and end markers replaced by ``block``."""
    lines = text.split("\n")
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise TableError(f"{name}: needs exactly one line {BEGIN} followed by one line {END} "
                         f"(found {len(begins)} begin, {len(ends)} end)")
    return "\n".join(lines[: begins[0] + 1] + block.split("\n") + lines[ends[0]:])


def summary(run: Dict, written: List[str]) -> str:
    """One line: commit, the headline metrics, wall times, threads and load."""
    m, cmd = run["metrics"], run.get("command") or {}
    commit = run.get("git_commit") or "unknown"
    sha = commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
    line = (f"default run at {sha}: t2i R@1 {m['test/t2i_R@1']:.4f}, i2t R@1 {m['test/i2t_R@1']:.4f}, rsum {m['test/rsum']:.3f}; "
            f"wall {run['wall_time_s']:.1f} s in the run")
    if cmd.get("command_seconds"):
        line += f", {cmd['command_seconds']:.1f} s whole command"
    line += f"; {(run.get('machine') or {}).get('torch_threads')} torch threads"
    if cmd.get("mean_load") is not None:
        line += f", mean load {cmd['mean_load']:.1f} on {cmd['cpu_count']} CPUs"
    return line + ("; wrote " + ", ".join(written) if written else "; nothing written")


def _cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def run_default(run_dir: Path, overrides: List[str], poll_s: float = 5.0) -> Path:
    """Run ``mmr-train`` (``python -m mmresearch.train``) into ``run_dir`` with ``overrides``;
    write ``command.json`` there (the commit at the start, whole-command seconds, CPUs, load sampled
    every ``poll_s``)."""
    from mmresearch.utils.run_info import git_commit

    argv = [sys.executable, "-m", "mmresearch.train", *overrides, f"hydra.run.dir={run_dir}"]
    commit_at_start = git_commit(REPO)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    loads = [os.getloadavg()[0]]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env)
    while True:
        try:
            code = proc.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            loads.append(os.getloadavg()[0])
    seconds = time.perf_counter() - started
    loads.append(os.getloadavg()[0])
    if code != 0:
        raise TableError(f"{run_dir}: mmr-train exited with code {code}")
    record = {"argv": ["mmr-train", *overrides], "commit_at_start": commit_at_start, "command_seconds": round(seconds, 1), "cpu_count": os.cpu_count(),
              "cpu_model": _cpu_model(), "mean_load": round(statistics.mean(loads), 2), "load_samples": loads}
    (Path(run_dir) / COMMAND_FILE).write_text(json.dumps(record, indent=2))
    return Path(run_dir)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=None, help="a finished run to read (default: run mmr-train now)")
    p.add_argument("--out-dir", type=Path, default=None, help="where the new run goes (default: outputs/default_run/<date>_<time>)")
    p.add_argument("--readme", type=Path, action="append", default=None, help="file to update (repeatable; default: both READMEs)")
    p.add_argument("overrides", nargs="*", help="extra mmr-train overrides after `--` (they are stated in the block)")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.run_dir and args.overrides:
        raise TableError(f"{args.run_dir}: overrides apply only to a new run, not to --run-dir")
    run_dir = args.run_dir
    if run_dir is None:
        run_dir = (args.out_dir or REPO / "outputs" / "default_run" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
        run_default(run_dir, args.overrides)
    run = load_run(run_dir)
    block = render_block(run)
    readmes = args.readme or list(READMES)
    updated = {path: replace_block(path.read_text(), block, str(path)) for path in readmes}  # all checked before any write
    written = []
    for path, text in updated.items():
        if text != path.read_text():
            path.write_text(text)
            written.append(str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path))
    line = summary(run, written)
    print(line)
    return line


if __name__ == "__main__":
    try:
        main()
    except TableError as err:
        sys.exit(f"regenerate.py: {err}")
