"""The table of ``run.sh``: export fidelity on the built-in data, then flickr8k-mini test retrieval
of the pretrained model as it is, full fine-tuning, LoRA and WiSE-FT. ``python table.py OUT_DIR``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("test/t2i_R@1", "test/i2t_R@1", "test/t2i_R@5", "test/i2t_R@5", "test/rsum")


def _metrics(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


def main(out: Path) -> None:
    checkpoint, export = _metrics(out / "eval_checkpoint")["metrics"], _metrics(out / "eval_export")["metrics"]
    keys = [k for k in checkpoint if k.startswith("test/") and ("R@" in k or "rsum" in k or "mAP" in k or "MRR" in k)]
    same = all(checkpoint[k] == export[k] for k in keys)
    pre = _metrics(out / "pretrain")
    print(f"Pretraining on the built-in data: test t2i / i2t R@1 {pre['metrics']['test/t2i_R@1']:.4f} / {pre['metrics']['test/i2t_R@1']:.4f}, "
          f"rsum {pre['metrics']['test/rsum']:.3f} ({pre['wall_time_s'] / 60:.1f} min). The transformers export evaluated with "
          f"`mmr-eval model=clip`: {len(keys)} test metrics {'all equal to' if same else 'NOT equal to'} the checkpoint's.\n")
    print("flickr8k-mini, 200 test images x 5 captions, every row tested in fp32 (chance R@1 0.005 / 0.005):\n")
    print("| model | " + " | ".join(k[5:] for k in KEYS) + " | wall |")
    print("|---" * (len(KEYS) + 2) + "|")
    rows = [("shapes-pretrained CLIP as it is (mmr-eval, no training)", out / "flickr_as_is", out / "flickr_as_is"),
            ("full fine-tuning, 8 epochs, lr 5e-4", out / "flickr_full_fp32", out / "flickr_full"),
            ("LoRA r=8 on q/v of both towers, 8 epochs, lr 2e-3", out / "flickr_lora_fp32", out / "flickr_lora")]
    for name, path, timed in rows:
        result = _metrics(path)
        wall = f"{_metrics(timed)['wall_time_s'] / 60:.1f} min"
        print(f"| {name} | " + " | ".join(f"{result['metrics'][k]:.4f}" for k in KEYS) + f" | {wall} |")
    for row in _metrics(out / "flickr_wise_ft")["wise_ft"]:
        print(f"| WiSE-FT of the full run, alpha {row['alpha']:g} | " + " | ".join(f"{row['metrics'][k]:.4f}" for k in KEYS) + " | |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
