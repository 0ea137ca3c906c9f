"""Record what a refactor must not change: the per-step training losses and the test metrics of
short fixed fp32 runs of the default dual encoder, ``vilt_shapes`` and ``albef_shapes``.

    python experiments/behaviour_check/record.py OUT.json            # this checkout
    PYTHONPATH=/path/to/other/checkout python .../record.py OTHER.json   # another commit
    python experiments/behaviour_check/record.py --compare A.json B.json

Each run goes through the CLI (``python -m mmresearch.train``), so the same script measures any
commit. ``--compare`` prints every logged value that differs (exact float equality) and exits 1
when one does.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

COMMON = [
    "data.train_size=640", "data.val_size=64", "data.test_size=96", "data.batch_size=32", "data.eval_batch_size=64",
    "trainer.max_epochs=1", "trainer.precision=32-true", "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "num_threads=1", "seed=3",
]
RUNS = {
    "default": [],
    "vilt_shapes": ["experiment=vilt_shapes", "image_encoder.model_kwargs.embed_dim=64", "image_encoder.model_kwargs.depth=2",
                    "text_encoder.config.hidden_size=64"],
    "albef_shapes": ["experiment=albef_shapes", "model.queue_size=64", "model.embed_dim=32"],
}
# the experiments set their own sizes: the common ones go last and win. One thread: with two,
# ALBEF's losses differ in the last digits from run to run of the same commit (CPU reductions).
STEPS = 20
#: logged names that changed on purpose: old name -> new name (issue 17: the dual encoder's pair
#: objective is named `image_text`, its terms `image_text_<term>`)
RENAMED = {"train/loss_i2t": "train/image_text_loss_i2t", "train/loss_t2i": "train/image_text_loss_t2i"}


def record(out: Path) -> None:
    results = {}
    for name, overrides in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            args = [sys.executable, "-m", "mmresearch.train", *overrides, *COMMON, f"trainer.max_steps={STEPS}", f"hydra.run.dir={tmp}"]
            proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stderr[-4000:]}")
            rows = [row for f in sorted(Path(tmp).rglob("metrics.csv")) for row in csv.DictReader(f.open())]
            train = {}
            for row in rows:
                for key, value in row.items():
                    if key.startswith("train/") and value not in ("", None):
                        train.setdefault(key, {})[row["step"]] = float(value)
            test = json.loads((Path(tmp) / "results.json").read_text())["metrics"]
            results[name] = {"train": train, "test": test}
            print(f"{name}: {len(train.get('train/loss', {}))} steps logged, test/rsum={test.get('test/rsum')}", flush=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True))


def compare(a: Path, b: Path) -> int:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    differing = 0
    for run in sorted(set(left) | set(right)):
        for part in ("train", "test"):
            x, y = left.get(run, {}).get(part, {}), right.get(run, {}).get(part, {})
            x = {RENAMED.get(k, k) if RENAMED.get(k) in y else k: v for k, v in x.items()}
            both = sorted(set(x) & set(y))
            for key in both:
                if x[key] != y[key]:
                    differing += 1
                    print(f"{run} {part} {key}: {x[key]} != {y[key]}")
            only = [f"{k} (only in {a.name})" for k in sorted(set(x) - set(y))] + [f"{k} (only in {b.name})" for k in sorted(set(y) - set(x))]
            print(f"{run} {part}: {len(both)} logged values compared{'; ' + ', '.join(only) if only else ''}")
    print("identical" if not differing else f"{differing} values differ")
    return int(bool(differing))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--compare", action="store_true")
    ns = parser.parse_args()
    sys.exit(compare(*ns.paths) if ns.compare else record(ns.paths[0]))
