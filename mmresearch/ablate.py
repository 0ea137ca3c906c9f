"""``mmr-ablate``: collect the ``results.json`` of sweeps into an ablation table and a plot.

Usage::

    mmr-ablate multirun/train/2026-11-22_10-00-00 [more sweep or run dirs ...]
        [--metrics test/t2i_R@1 test/rsum] [--merge tau0=temperature.tau,temperature.init_tau]
        [--plot test/rsum --x tau0] [--out experiments/my_study/table]

Every run directory below the given paths that holds a ``results.json`` is one run. Its setting is
the command-line overrides Hydra recorded for it (``.hydra/overrides.yaml`` or the copy in
``results.json``), without the seed: the table has one row per setting, one column per key whose
value differs between runs (a run that did not override a key gets the value it ran with: the
config group it used, or the resolved config value), and each metric as mean +- sample std over
the seeds, with the number of seeds. ``--out PREFIX`` writes ``PREFIX.md``, ``PREFIX.csv``,
``PREFIX.tex`` (booktabs) and, with ``--plot``, ``PREFIX.png``; without it the Markdown table is
printed. The best mean of each metric is in bold.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from mmresearch.utils.results import RESULTS_FILE

DEFAULT_METRICS = ("test/t2i_R@1", "test/i2t_R@1", "test/rsum")
# keys that do not make a setting: where and how a run was logged, resumed or tested
IGNORED_PREFIXES = ("hydra.", "trainer.enable_", "num_threads", "paths.", "ckpt_path", "test", "logger")
LOWER_IS_BETTER = ("loss",)


class AblationError(ValueError):
    """Input the tool cannot turn into a table (no runs, unknown metric, bad --merge)."""


@dataclass
class Run:
    """One run: where it is, its overrides as ``{key: value}``, its metrics and resolved config."""

    path: Path
    overrides: Dict[str, str]
    metrics: Dict[str, float]
    config: dict
    choices: Dict[str, str] = field(default_factory=dict)

    def value(self, key: str) -> Optional[str]:
        """What this run used for ``key``: its override, else its config group choice, else the
        resolved config value; ``None`` when the run has no such key."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return str(self.choices[key])
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return None if isinstance(node, (dict, list)) else str(node)


def _parse_overrides(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def load_run(results_path: Path) -> Run:
    """Read one run's results and its Hydra records (names the file when it is unreadable)."""
    try:
        results = json.loads(results_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AblationError(f"{results_path}: not a readable results.json ({err})") from err
    run_dir = results_path.parent
    record = results.get("hydra") or {}
    overrides = record.get("overrides")
    if overrides is None and (run_dir / ".hydra" / "overrides.yaml").exists():
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    choices = record.get("choices")
    if choices is None and (run_dir / ".hydra" / "hydra.yaml").exists():
        hydra_cfg = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text()) or {}
        choices = (hydra_cfg.get("hydra", {}).get("runtime", {}) or {}).get("choices", {})
    metrics = {k: float(v) for k, v in (results.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return Run(run_dir, _parse_overrides(overrides or []), metrics, results.get("config") or {}, {k: v for k, v in (choices or {}).items() if v is not None})


def find_runs(paths: Sequence[str | Path]) -> List[Run]:
    """Every run below ``paths`` (a run directory or any directory above runs)."""
    runs: List[Run] = []
    seen = set()
    for root in map(Path, paths):
        if not root.exists():
            raise AblationError(f"{root}: no such directory")
        found = [root / RESULTS_FILE] if (root / RESULTS_FILE).exists() else sorted(root.rglob(RESULTS_FILE))
        if not found:
            raise AblationError(f"{root}: no {RESULTS_FILE} below it (did the runs finish?)")
        for p in found:  # overlapping paths must not count a run twice
            if p.resolve() not in seen:
                seen.add(p.resolve())
                runs.append(load_run(p))
    return runs


def _parse_merge(items: Sequence[str]) -> Dict[str, List[str]]:
    merged = {}
    for item in items:
        name, _, keys = item.partition("=")
        if not name or not keys:
            raise AblationError(f"--merge {item!r}: expected NAME=KEY1,KEY2")
        merged[name] = keys.split(",")
    return merged


@dataclass
class Table:
    """Rows of (setting, {metric: (mean, std, n)}), with the setting's column names."""

    columns: List[str]
    metrics: List[str]
    rows: List[Tuple[Tuple[str, ...], Dict[str, Tuple[float, float, int]], List[str]]]


def build_table(runs: List[Run], metrics: Optional[Sequence[str]] = None, merge: Optional[Dict[str, List[str]]] = None,
                seed_key: str = "seed") -> Table:
    """Group runs by setting (every varying key but the seed) and aggregate each metric over seeds."""
    merge = merge or {}
    merged_keys = {k for keys in merge.values() for k in keys}
    keys = sorted({k for r in runs for k in r.overrides} - {seed_key} - merged_keys)
    keys = [k for k in keys if not k.startswith(IGNORED_PREFIXES)]

    def value(run: Run, column: str) -> str:
        if column in merge:
            return next((v for k in merge[column] if (v := run.overrides.get(k)) is not None),
                        next((v for k in merge[column] if (v := run.value(k)) is not None), "-"))
        v = run.value(column)
        return "-" if v is None else v

    columns = [c for c in [*merge, *keys] if len({value(r, c) for r in runs}) > 1]
    if metrics is None:
        common = set.intersection(*(set(r.metrics) for r in runs))
        metrics = [m for m in DEFAULT_METRICS if m in common] or sorted(common)
    for m in metrics:
        missing = [str(r.path) for r in runs if m not in r.metrics]
        if missing:
            raise AblationError(f"metric {m!r} is missing from {len(missing)} run(s), e.g. {missing[0]}")

    groups: Dict[Tuple[str, ...], List[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(value(run, c) for c in columns), []).append(run)
    rows = []
    for setting in sorted(groups, key=lambda s: tuple(_sort_key(v) for v in s)):
        members = groups[setting]
        seeds = [str(r.value(seed_key)) for r in members]
        stats = {}
        for m in metrics:
            values = [r.metrics[m] for r in members]
            stats[m] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
        rows.append((setting, stats, seeds))
    return Table(columns, list(metrics), rows)


def _sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _best(table: Table, metric: str) -> float:
    means = [stats[metric][0] for _, stats, _ in table.rows]
    return min(means) if any(w in metric for w in LOWER_IS_BETTER) else max(means)


def _cell(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def to_markdown(table: Table, digits: int = 3) -> str:
    head = [*table.columns, "seeds", *table.metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {m: _best(table, m) for m in table.metrics}
    for setting, stats, seeds in table.rows:
        cells = []
        for m in table.metrics:
            mean, std, _ = stats[m]
            text = _cell(mean, std, digits)
            cells.append(f"**{text}**" if len(table.rows) > 1 and mean == best[m] else text)
        lines.append("| " + " | ".join([*setting, str(len(seeds)), *cells]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.columns, "n_seeds", "seeds", *[f"{m}_{s}" for m in table.metrics for s in ("mean", "std")]])
    for setting, stats, seeds in table.rows:
        writer.writerow([*setting, len(seeds), " ".join(seeds), *[f"{stats[m][i]:.6g}" for m in table.metrics for i in (0, 1)]])
    return buffer.getvalue()


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("@", "@")):
        text = text.replace(a, b)
    return text


def to_latex(table: Table, digits: int = 3, caption: Optional[str] = None) -> str:
    """A booktabs table (``\\usepackage{booktabs}``); mean $\\pm$ std, best mean in bold."""
    best = {m: _best(table, m) for m in table.metrics}
    spec = "l" * len(table.columns) + "r" + "c" * len(table.metrics)
    out = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    out.append(" & ".join([*(_tex(c) for c in table.columns), "seeds", *(_tex(m) for m in table.metrics)]) + r" \\")
    out.append(r"\midrule")
    for setting, stats, seeds in table.rows:
        cells = []
        for m in table.metrics:
            mean, std, _ = stats[m]
            text = f"{mean:.{digits}f} $\\pm$ {std:.{digits}f}"
            cells.append(rf"\textbf{{{text}}}" if len(table.rows) > 1 and mean == best[m] else text)
        out.append(" & ".join([*(_tex(v) for v in setting), str(len(seeds)), *cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        out.append(rf"\caption{{{_tex(caption)}}}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def figure(table: Table, metric: str, x: str):
    """``metric`` (mean, std error bars) against column ``x``: one series per setting of the other
    columns (:func:`mmresearch.evaluation.plots.errorbar_series`: numeric ``x`` a line per series,
    categorical ``x`` points side by side)."""
    from mmresearch.evaluation.plots import errorbar_series

    if x not in table.columns:
        raise AblationError(f"--x {x!r} is not a column of the table (columns: {table.columns})")
    if metric not in table.metrics:
        raise AblationError(f"--plot {metric!r} is not one of --metrics {table.metrics}")
    xi = table.columns.index(x)
    series: Dict[str, List[Tuple[str, float, float]]] = {}
    for setting, stats, _ in table.rows:
        rest = ", ".join(f"{c}={v}" for i, (c, v) in enumerate(zip(table.columns, setting)) if i != xi)
        series.setdefault(rest, []).append((setting[xi], stats[metric][0], stats[metric][1]))
    n = sorted({len(seeds) for _, _, seeds in table.rows})
    return errorbar_series(series, x, f"{metric} (mean ± std, {'/'.join(map(str, n))} seeds)")


def plot(table: Table, metric: str, x: str, path: Path) -> Path:
    """:func:`figure` written as a PNG to ``path``."""
    from mmresearch.evaluation.plots import save_figure

    return save_figure(figure(table, metric, x), path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mmr-ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="multirun (sweep) directories or run directories")
    parser.add_argument("--metrics", nargs="+", default=None, help=f"metrics to report (default: {' '.join(DEFAULT_METRICS)})")
    parser.add_argument("--merge", nargs="*", default=[], help="NAME=KEY1,KEY2: one column from keys that mean the same thing")
    parser.add_argument("--seed-key", default="seed", help="the key whose runs are averaged (default: seed)")
    parser.add_argument("--plot", default=None, metavar="METRIC", help="plot this metric against --x")
    parser.add_argument("--x", default=None, help="the column on the plot's x axis (default: the first column)")
    parser.add_argument("--digits", type=int, default=3)
    parser.add_argument("--caption", default=None, help="LaTeX caption")
    parser.add_argument("--out", default=None, metavar="PREFIX", help="write PREFIX.md/.csv/.tex (and .png with --plot)")
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.paths)
        table = build_table(runs, args.metrics, _parse_merge(args.merge), args.seed_key)
        markdown = to_markdown(table, args.digits)
        if args.out is None:
            print(markdown, end="")
            if args.plot:
                raise AblationError("--plot needs --out PREFIX for the PNG")
            return 0
        prefix = Path(args.out)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        named = {ext: prefix.parent / f"{prefix.name}{ext}" for ext in (".md", ".csv", ".tex", ".png")}  # keeps dots in the name
        named[".md"].write_text(markdown)
        named[".csv"].write_text(to_csv(table))
        named[".tex"].write_text(to_latex(table, args.digits, args.caption))
        written = [named[e] for e in (".md", ".csv", ".tex")]
        if args.plot:
            written.append(plot(table, args.plot, args.x or (table.columns[0] if table.columns else ""), named[".png"]))
        print(markdown, end="")
        print(f"{len(runs)} runs, {len(table.rows)} settings -> " + ", ".join(map(str, written)))
        return 0
    except AblationError as err:
        parser.exit(2, f"mmr-ablate: error: {err}\n")


if __name__ == "__main__":
    raise SystemExit(main())
