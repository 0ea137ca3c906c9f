#!/usr/bin/env bash
# InfoNCE vs SigLIP (with its own temperature/bias start) vs VSE++ triplet, 3 seeds each; every
# loss trains with the same NegCLIP hard-negative captions (data.train_negatives=true, the default).
# Run from the repository root: bash experiments/ablations/loss/run.sh [extra overrides, e.g. num_threads=1]
set -euo pipefail
D=experiments/ablations/loss
mmr-train --multirun experiment=ablation loss=infonce,triplet seed=0,1,2 hydra.sweep.dir=$D/runs/infonce_triplet "$@"
mmr-train --multirun experiment=ablation loss=siglip temperature=siglip seed=0,1,2 hydra.sweep.dir=$D/runs/siglip "$@"
mmr-ablate $D/runs/infonce_triplet $D/runs/siglip --metrics test/t2i_R@1 test/i2t_R@1 test/t2i_R@10 test/rsum test/comp_acc \
    --plot test/rsum --x loss --out $D/table
