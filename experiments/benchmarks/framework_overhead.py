"""Framework overhead: the dual encoder's Lightning training step against a plain PyTorch loop on
the same model, data and optimizer, side by side in one process.

Both start from the same initial weights (a copy), read the same training loader (the built-in
data, the default tiny towers) and use the same AdamW; the plain loop does what the model's
training step does: forward to the loss terms, backward, optimizer step, temperature clamp. The
Lightning run has no logger, checkpoint, progress bar, validation or callbacks beyond a timer, so
what is measured is the Trainer loop plus our ``training_step`` (with its ``self.log`` calls).
Time per step is the median interval between the starts of consecutive steps (data loading
included), after ``--warmup`` steps; the order of the two runs alternates over ``--rounds``.

Usage: python experiments/benchmarks/framework_overhead.py [--steps 40] [--rounds 2] [--threads 2]
       [--batch 64] [--out results.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from mmresearch.models.builder import build_model
from mmresearch.utils.instantiate import build

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


def _intervals(starts: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(starts[warmup:], starts[warmup + 1 :])]


def plain_loop(model, loader, steps: int) -> list[float]:
    optimizer = model.make_optimizer()  # the same optimizer (groups, fused) as configure_optimizers
    model.train()
    starts = []
    it = iter(loader)
    for _ in range(steps + 1):
        starts.append(time.perf_counter())
        batch = next(it)
        terms = model(batch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        model.temperature.clamp_()
    return starts


def lightning_loop(model, datamodule, steps: int) -> list[float]:
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[timer], precision="32-true")
    trainer.fit(model, datamodule=datamodule)
    return timer.starts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"data.batch_size={args.batch}", "data.train_size=4096", "data.val_size=64", "data.test_size=64",
                 "scheduler=none", "trainer.precision=32-true"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    L.seed_everything(0)
    tokenizer = build(cfg, "tokenizer")
    datamodule = build(cfg, "data", tokenizer=tokenizer)
    datamodule.setup("fit")
    template = build_model(cfg, tokenizer, datamodule)
    results = {"plain": [], "lightning": []}
    for r in range(args.rounds):
        order = ("plain", "lightning") if r % 2 == 0 else ("lightning", "plain")
        for name in order:
            model = copy.deepcopy(template)
            torch.manual_seed(r)
            if name == "plain":
                starts = plain_loop(model, datamodule.train_dataloader(), args.warmup + args.steps)
            else:
                starts = lightning_loop(model, datamodule, args.warmup + args.steps)
            results[name].extend(_intervals(starts, args.warmup))
    plain, lightning = statistics.median(results["plain"]), statistics.median(results["lightning"])
    print(f"dual encoder (resnet_tiny + bert_tiny), built-in data, batch {args.batch}, CPU {args.threads} threads, "
          f"{args.rounds} rounds x {args.steps} steps, median s/step")
    print(f"plain PyTorch loop : {plain * 1000:8.1f} ms/step")
    print(f"Lightning          : {lightning * 1000:8.1f} ms/step")
    print(f"ratio Lightning / plain: {lightning / plain:.3f} (target <= 1.10)")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "plain_ms": plain * 1000, "lightning_ms": lightning * 1000,
                                              "ratio": lightning / plain, "intervals": results}, indent=2))


if __name__ == "__main__":
    main()
