"""The LiT table: test retrieval of the trained runs against the untrained-projection baseline
(mean over the seeds present in ``runs/``), as Markdown."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METRICS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum"]


def main(runs: Path) -> str:
    rows = []
    for setting, label in (("baseline", "untrained projections (baseline)"), ("trained", "trained projections (LiT)")):
        files = sorted(runs.glob(f"{setting}-seed*.json"))
        if not files:
            continue
        results = [json.loads(f.read_text()) for f in files]
        cells = []
        for m in METRICS:
            values = [r["metrics"][f"test/{m}"] for r in results]
            scale = 1 if m == "rsum" else 100
            mean = statistics.mean(values) * scale
            cells.append(f"{mean:.1f}" + (f" ± {statistics.stdev(values) * scale:.1f}" if len(values) > 1 else ""))
        minutes = statistics.mean(r["wall_time_s"] for r in results) / 60
        rows.append(f"| {label} | {len(files)} | " + " | ".join(cells) + f" | {minutes:.1f} |")
    header = "| | seeds | " + " | ".join(m.replace("_", " ") for m in METRICS) + " | minutes |"
    return "\n".join([header, "|" + "---|" * (len(METRICS) + 3), *rows]) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "runs")), end="")
