#!/usr/bin/env bash
# Batch size = in-batch negatives per query (31, 63, 127 plus the hard-negative captions), the same
# 3 epochs of data for each (so a larger batch also means fewer optimizer steps), 3 seeds each.
# Run from the repository root: bash experiments/ablations/batch_size/run.sh
set -euo pipefail
D=experiments/ablations/batch_size
mmr-train --multirun experiment=ablation data.batch_size=32,64,128 seed=0,1,2 hydra.sweep.dir=$D/runs/batch
mmr-ablate $D/runs/batch --metrics test/t2i_R@1 test/i2t_R@1 test/t2i_R@10 test/rsum --plot test/rsum --x data.batch_size --out $D/table
