#!/usr/bin/env bash
# Fixed vs learnable temperature, each started at tau 0.02 and 0.07 (CLIP), 3 seeds each.
# Run from the repository root: bash experiments/ablations/temperature/run.sh
set -euo pipefail
D=experiments/ablations/temperature
mmr-train --multirun experiment=ablation temperature=fixed temperature.tau=0.02,0.07 seed=0,1,2 hydra.sweep.dir=$D/runs/fixed
mmr-train --multirun experiment=ablation temperature=learnable temperature.init_tau=0.02,0.07 seed=0,1,2 hydra.sweep.dir=$D/runs/learnable
mmr-ablate $D/runs/fixed $D/runs/learnable --merge tau0=temperature.tau,temperature.init_tau \
    --metrics test/t2i_R@1 test/i2t_R@1 test/t2i_R@10 test/rsum --plot test/rsum --x tau0 --out $D/table
