#!/bin/bash
# The body shared by the sbatch templates beside this file (sourced from them): starts one
# `mmr-train` process per SLURM task with `srun`. Lightning reads the ranks from SLURM's
# variables (no torchrun); trainer.devices/num_nodes come from the allocation.
#
# Environment knobs:
#   PYTHON   interpreter with mmresearch installed (default: .venv/bin/python if present, else python)
#   TRAINER  trainer config group (default ddp; ddp_cpu on a CPU-only cluster)
#   RUN_DIR  run directory (default outputs/slurm/<job name>-<job id>). It does not change when the
#            job is requeued, so the requeued job finds its checkpoint there and resumes
#            (resume=auto: the run directory's furthest checkpoint when there is one, else from scratch).
# Arguments: Hydra overrides of `mmr-train` (after resume=auto, so resume=never or ckpt_path=... wins).
set -euo pipefail

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
TRAINER=${TRAINER:-ddp}
RUN_DIR=${RUN_DIR:-outputs/slurm/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
export TOKENIZERS_PARALLELISM=false
echo "job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST}: ${SLURM_NTASKS} tasks -> ${RUN_DIR}"

srun --kill-on-bad-exit=1 "$PYTHON" -m mmresearch.train \
    trainer="$TRAINER" \
    trainer.devices="${SLURM_NTASKS_PER_NODE}" \
    trainer.num_nodes="${SLURM_JOB_NUM_NODES}" \
    hydra.run.dir="$RUN_DIR" \
    resume=auto \
    "$@"
