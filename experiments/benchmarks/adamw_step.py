"""AdamW step time: torch's fused kernel (``optimizer.fused=auto``, our default where torch has
one) against the ``foreach`` (multi-tensor) and the per-parameter loop implementations, on the
trainable parameters of real dual encoders built from the config, side by side in one process.

For each model (``--models``: the default tiny towers, and ViT-B/16 + BERT-base), the parameters
get random gradients once; each implementation then takes ``--repeats`` steps, interleaved
(fused, foreach, loop, fused, ...), after one warm-up step each. The median step time is reported
with the ratio to the fastest. The optimizer is the model's own (``make_optimizer``: AdamW with
weight-decay groups) with only ``fused``/``foreach`` changed. The three give the same update
(``tests/optim/test_fused.py``).

Usage: python experiments/benchmarks/adamw_step.py [--models tiny base] [--repeats 10] [--threads 2]
       [--device cpu] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mmresearch.models.builder import build_model
from mmresearch.utils.instantiate import build

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

BASE_BERT = ["text_encoder.config.hidden_size=768", "text_encoder.config.num_hidden_layers=12",
             "text_encoder.config.num_attention_heads=12", "text_encoder.config.intermediate_size=3072",
             "text_encoder.config.max_position_embeddings=512"]
MODELS = {
    "tiny": [],  # resnet_tiny + bert_tiny (the default run)
    "base": ["image_encoder=timm", "image_encoder.name=vit_base_patch16_224", "image_encoder.pretrained=false",
             "data.image_size=224", "model.towers.image.head.out_dim=512", *BASE_BERT],
}
IMPLEMENTATIONS = {"fused": dict(fused=True), "foreach": dict(fused=None, foreach=True), "loop": dict(fused=None, foreach=False)}


def build_dual_encoder(overrides: list[str], device: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    tokenizer = build(cfg, "tokenizer")
    if "text_encoder.config.hidden_size=768" in overrides:  # BERT-base vocabulary
        tokenizer = range(30522)
    return build_model(cfg, tokenizer).to(device)


def time_steps(model, device: str, repeats: int) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    factory = model.optimizer_factory
    optimizers = {}
    for name, kwargs in IMPLEMENTATIONS.items():
        model.optimizer_factory = partial(factory.func, *factory.args, **{**factory.keywords, **kwargs})
        optimizers[name] = model.make_optimizer()
        optimizers[name].step()  # warm-up (allocates the state)
    model.optimizer_factory = factory
    times = {name: [] for name in optimizers}
    for _ in range(repeats):
        for name, opt in optimizers.items():
            sync()
            start = time.perf_counter()
            opt.step()
            sync()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return dict(params=sum(p.numel() for p in params), tensors=len(params), ms=medians,
                ratio_to_fused={name: m / medians["fused"] for name, m in medians.items()})


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"AdamW step, median of {args.repeats}; torch {torch.__version__}, {args.threads} threads, device {args.device}")
    print(f"{'model':<6} {'params':>8} {'tensors':>7} {'fused ms':>9} {'foreach ms':>10} {'loop ms':>9} {'foreach/fused':>13} {'loop/fused':>10}")
    rows = {}
    for name in args.models:
        model = build_dual_encoder(MODELS[name], args.device)
        r = rows[name] = time_steps(model, args.device, args.repeats)
        del model
        print(f"{name:<6} {r['params'] / 1e6:>7.1f}M {r['tensors']:>7} {r['ms']['fused']:>9.1f} {r['ms']['foreach']:>10.1f} "
              f"{r['ms']['loop']:>9.1f} {r['ratio_to_fused']['foreach']:>13.2f} {r['ratio_to_fused']['loop']:>10.2f}", flush=True)
    result = dict(machine=dict(cpus=os.cpu_count(), platform=platform.platform(), python=sys.version.split()[0],
                               torch=torch.__version__, device=args.device, threads=args.threads),
                  repeats=args.repeats, models=rows)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
