"""``results.json``: the one file every run leaves, read by the ablation tools."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping

from omegaconf import DictConfig, OmegaConf

from mmresearch.utils.run_info import git_commit, machine, package_versions

RESULTS_FILE = "results.json"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(
    output_dir: Path, metrics: Mapping[str, Any], cfg: DictConfig, wall_time_s: float, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``results.json`` into ``output_dir`` and return its path."""
    payload: Dict[str, Any] = {
        "metrics": {k: _plain(v) for k, v in sorted(metrics.items())},
        "config": OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "machine": machine(),
        "wall_time_s": round(float(wall_time_s), 3),
    }
    payload.update(extra or {})
    path = Path(output_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str))
    tmp.replace(path)
    return path


def format_table(metrics: Mapping[str, Any], title: str = "test metrics") -> str:
    """A plain-text table of the metrics, for the end of a run."""
    rows = [(k, f"{float(v):.4f}" if isinstance(v, (int, float)) else str(v)) for k, v in sorted(metrics.items())]
    width = max([len(k) for k, _ in rows] + [len(title)])
    line = "-" * (width + 12)
    body = "\n".join(f"{k:<{width}}  {v:>10}" for k, v in rows)
    return f"{line}\n{title}\n{line}\n{body}\n{line}"


def format_paths(paths: Mapping[str, Any]) -> str:
    """``name: path`` lines of what a run wrote (a list value: one line per path; empty ones left out)."""
    lines = []
    for name, value in paths.items():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path:
                lines.append(f"{name}: {path}")
    return "\n".join(lines)
