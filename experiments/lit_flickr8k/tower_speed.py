"""Forward time of the frozen LiT image tower (timm tf_efficientnet_lite0, a batch of 64 at
224 px) on the CPU, side by side in one process: fp32 channels-first (baseline), fp32
channels-last, bf16 autocast + channels-last. Prints seconds per batch and the ratio to the
baseline. Usage: python experiments/lit_flickr8k/tower_speed.py [--threads 2] [--repeats 3]"""

from __future__ import annotations

import argparse
import time

import timm
import torch


def seconds(model, x, repeats: int, bf16: bool) -> float:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    base = seconds(model, x, args.repeats, bf16=False)
    rows = [("fp32, channels-first (baseline)", base)]
    model = model.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    rows.append(("fp32, channels-last", seconds(model, xc, args.repeats, bf16=False)))
    rows.append(("bf16 autocast, channels-last", seconds(model, xc, args.repeats, bf16=True)))
    print(f"tf_efficientnet_lite0 forward, batch {args.batch} at 224 px, {args.threads} threads, {args.repeats} repeats")
    for name, s in rows:
        print(f"{name:34s} {s:7.3f} s/batch  {base / s:5.2f}x faster")


if __name__ == "__main__":
    main()
