#!/usr/bin/env bash
# The fine-tuning pipeline end to end with learned weights (issue 18), offline:
#   1. a small CLIP (transformers format, random init) is pretrained on the built-in data (model=clip);
#   2. exported in transformers' format (mmr-export); evaluating the export (mmr-eval model=clip)
#      must give the checkpoint's test metrics;
#   3. on flickr8k-mini: the exported model as it is, full fine-tuning, LoRA (image and text towers),
#      and the WiSE-FT table of the full fine-tuning; table.py writes the table.
#   bash experiments/clip_finetune/run.sh [OUT_DIR]      (about 10 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/clip_finetune}
PY=${PYTHON:-python}
DATA=${MMR_DATA_DIR:-../shared/data}
export HF_HUB_OFFLINE=1
mkdir -p "$OUT"
QUIET="trainer.enable_progress_bar=false callbacks.zero_shot=null callbacks.linear_probe=null callbacks.evaluation_plots=null"
EVAL="eval=retrieval precision=32-true trainer.enable_progress_bar=false"

$PY experiments/clip_finetune/make_checkpoint.py "$OUT/random" "$DATA/flickr8k-mini/captions.csv"
# 1. pretraining on the built-in data (2 epochs of 23,040 images, 64 px)
$PY -m mmresearch.train model=clip model.pretrained="$OUT/random" loss=infonce trainer.max_epochs=2 optimizer.lr=1e-3 \
    trainer.enable_progress_bar=false hydra.run.dir="$OUT/pretrain"
# 2. export, and the export evaluated as a pretrained model against the checkpoint (built-in test split)
$PY -m mmresearch.export ckpt_path="$OUT/pretrain" format=hf out="$OUT/shapes-clip"
$PY -m mmresearch.eval ckpt_path="$OUT/pretrain" $EVAL hydra.run.dir="$OUT/eval_checkpoint"
$PY -m mmresearch.eval model=clip model.pretrained="$OUT/shapes-clip" loss=infonce $EVAL hydra.run.dir="$OUT/eval_export"
# 3. flickr8k-mini (700 training images x 5 captions, 200 test images): as it is, full, LoRA, WiSE-FT
FLICKR="data=flickr8k_mini data.num_workers=2"
$PY -m mmresearch.eval model=clip model.pretrained="$OUT/shapes-clip" loss=infonce $FLICKR $EVAL hydra.run.dir="$OUT/flickr_as_is"
$PY -m mmresearch.train model=clip model.pretrained="$OUT/shapes-clip" loss=infonce $FLICKR trainer.max_epochs=8 optimizer.lr=5e-4 \
    $QUIET hydra.run.dir="$OUT/flickr_full"
LORA="{r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj]}"
$PY -m mmresearch.train model=clip model.pretrained="$OUT/shapes-clip" loss=infonce $FLICKR trainer.max_epochs=8 optimizer.lr=2e-3 \
    "model.towers.image.lora=$LORA" "model.towers.text.lora=$LORA" $QUIET hydra.run.dir="$OUT/flickr_lora"
# every row of the table in fp32 (the trainings test in bf16-mixed)
for run in flickr_full flickr_lora; do
  $PY -m mmresearch.eval ckpt_path="$OUT/$run" $EVAL hydra.run.dir="$OUT/${run}_fp32"
done
$PY -m mmresearch.eval ckpt_path="$OUT/flickr_full" eval=wise_ft precision=32-true trainer.enable_progress_bar=false \
    hydra.run.dir="$OUT/flickr_wise_ft"
$PY experiments/clip_finetune/table.py "$OUT" | tee experiments/clip_finetune/table.md
