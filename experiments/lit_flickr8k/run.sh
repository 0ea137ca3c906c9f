#!/usr/bin/env bash
# LiT on the real flickr8k-mini photos (conf/experiment/lit_flickr8k.yaml): the untrained-projection
# baseline and the trained run, seeds 0..N-1 (SEEDS, default "0"); results.json copies in runs/.
# Needs ../shared/data/flickr8k-mini (or MMR_DATA_DIR) and the offline encoders (pip install -e '.[lit]').
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=experiments/lit_flickr8k/runs
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for seed in ${SEEDS:-0}; do
  for setting in baseline trained; do
    extra=(); [ "$setting" = baseline ] && extra=(trainer.max_epochs=0)
    dir=outputs/lit_flickr8k/${setting}-seed${seed}
    rm -rf "$dir"
    "$PY" -m mmresearch.train experiment=lit_flickr8k seed="$seed" "${extra[@]}" hydra.run.dir="$dir"
    cp "$dir/results.json" "$OUT/${setting}-seed${seed}.json"
    [ -f "$dir/csv/metrics.csv" ] && cp "$dir/csv/metrics.csv" "$OUT/${setting}-seed${seed}.metrics.csv"
  done
done
"$PY" experiments/lit_flickr8k/table.py "$OUT" > experiments/lit_flickr8k/table.md
cat experiments/lit_flickr8k/table.md
