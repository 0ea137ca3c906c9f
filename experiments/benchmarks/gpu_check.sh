#!/usr/bin/env bash
# The prepared GPU check: every model family a few bf16 steps on CUDA through the real CLI
# (training, validation, test, the after-test evaluations, a checkpoint reloaded by mmr-eval), then
# the GPU benchmark (ViT-B/16 + BERT-base dual encoder, experiments/benchmarks/gpu_dual_encoder.py).
# Under 8 minutes on one H200. Run it whenever a GPU is lent; commit what it writes.
#
#   bash experiments/benchmarks/gpu_check.sh OUT_DIR            # on a machine with a GPU
#   DEVICE=cpu QUICK=1 bash experiments/benchmarks/gpu_check.sh OUT_DIR   # smoke test of the script itself on a CPU
#
# Writes OUT_DIR/gpu_check.log (everything), OUT_DIR/summary.json (per run: command, exit code,
# wall time, test metrics) and OUT_DIR/gpu_benchmark.json. PYTHON picks the interpreter (python3).
set -uo pipefail
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS_DIR:-/tmp/gpu_check_runs}
rm -rf "$RUNS" && mkdir -p "$RUNS"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
LOG="$OUT/gpu_check.log"
: > "$LOG"
cd "$(dirname "$0")/../.."

if [ "$DEVICE" = cuda ]; then ACCEL="trainer.accelerator=gpu trainer.devices=1 trainer.precision=bf16-mixed"; STEPS=${STEPS:-30}
else ACCEL="trainer.accelerator=cpu trainer.precision=bf16-mixed num_threads=2"; STEPS=${STEPS:-3}; fi
SMALL="data.train_size=2048 data.val_size=128 data.test_size=256 data.batch_size=64 data.eval_batch_size=128 trainer.max_epochs=1
       trainer.max_steps=$STEPS trainer.enable_progress_bar=false"
[ -n "${QUICK:-}" ] && SMALL="$SMALL data.train_size=256 data.test_size=64 data.val_size=64 data.batch_size=32"

{ echo "== $(date -u) on $(hostname)"; nvidia-smi 2>&1 | head -15
  $PY -c "import torch, lightning, transformers, timm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', '| lightning', lightning.__version__, '| transformers',
transformers.__version__, '| timm', timm.__version__)"; } >> "$LOG" 2>&1

declare -a NAMES=() CODES=() SECONDS_=()
run() {  # run NAME MODULE ARGS...: one CLI run into $RUNS/NAME
  local name=$1 module=$2; shift 2
  local start=$(date +%s)
  echo "== $name: $PY -m $module $*" >> "$LOG"
  timeout ${RUN_TIMEOUT:-150} $PY -m "$module" "$@" "hydra.run.dir=$RUNS/$name" >> "$LOG" 2>&1
  local code=$?
  NAMES+=("$name"); CODES+=("$code"); SECONDS_+=("$(( $(date +%s) - start ))")
  echo "== $name: exit $code" >> "$LOG"
}

# shellcheck disable=SC2086
run dual_encoder mmresearch.train $ACCEL $SMALL
run dual_encoder_siglip_vit mmresearch.train $ACCEL $SMALL loss=siglip temperature=siglip image_encoder=vit_tiny data.train_negatives=true
run vilt mmresearch.train experiment=vilt_shapes $ACCEL $SMALL
run albef mmresearch.train experiment=albef_shapes $ACCEL $SMALL model.queue_size=1024
run albef_vqa mmresearch.train experiment=albef_vqa "model.init_from=$RUNS/albef" $ACCEL $SMALL
run mmr_eval_reload mmresearch.eval "ckpt_path=$RUNS/dual_encoder" eval=retrieval $ACCEL trainer.enable_progress_bar=false

# the summary: one entry per run, with its test metrics
{ for i in "${!NAMES[@]}"; do echo "${NAMES[$i]} ${CODES[$i]} ${SECONDS_[$i]}"; done; } > "$RUNS/codes.txt"
$PY - "$RUNS" "$OUT/summary.json" <<'PY'
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
summary = {}
for line in (runs / "codes.txt").read_text().split("\n"):
    if not line.strip():
        continue
    name, code, seconds = line.split()
    results = runs / name / "results.json"
    metrics = json.loads(results.read_text()).get("metrics", {}) if results.is_file() else {}
    keep = {k: v for k, v in metrics.items() if k.startswith("test/") and any(s in k for s in ("R@1", "rsum", "itm_acc", "vqa_score", "comp_acc"))}
    summary[name] = {"exit_code": int(code), "wall_s": round(float(seconds), 1), "metrics": keep}
out.write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY

# the GPU benchmark: the dual encoder at full size, baseline and the speed switches (2 rounds, order alternating)
if [ "$DEVICE" = cuda ]; then
  timeout ${BENCH_TIMEOUT:-200} $PY experiments/benchmarks/gpu_dual_encoder.py --batch 256 --steps 20 --warmup 8 --rounds 2 \
    --variants baseline,unfused_adamw,compile,grad_ckpt --threads 8 --out "$OUT/gpu_benchmark.json" >> "$LOG" 2>&1
else
  $PY experiments/benchmarks/gpu_dual_encoder.py --tiny --device cpu --batch 8 --steps 2 --warmup 1 --out "$OUT/gpu_benchmark.json" >> "$LOG" 2>&1
fi
echo "== benchmark: exit $?" >> "$LOG"
grep -E "^== " "$LOG"
