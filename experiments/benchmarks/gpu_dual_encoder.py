"""GPU training throughput of the CLIP-style dual encoder: ViT-B/16 image tower + BERT-base text
tower, trained with our real code (Lightning ``Trainer.fit`` on our ``DualEncoder``), for one or
more variants (config overrides) side by side in one process.

What it measures, per variant: the median time of one training step, samples/s, peak memory,
the model FLOPs of one step, the achieved TFLOP/s and the MFU (model FLOPs utilisation).

Method:

- The model is built from the Hydra config (``conf/``, primary ``train.yaml``) with
  ``mmresearch.models.builder.build_model``. At full size the towers are
  ``image_encoder=timm image_encoder.name=vit_base_patch16_224 image_encoder.pretrained=false
  data.image_size=224`` and a BERT-base built from a config with random init (``text_encoder=bert_tiny``
  resized to 768 wide, 12 layers, 12 heads, 3072 MLP, 512 positions, dropout 0.1 as in
  bert-base-uncased; vocabulary 30522). Both projection heads map to 512. The learning rate is
  1e-4, so that a random ViT-B stays finite on random data (the step's cost does not depend on it).
  ``--tiny`` keeps the default tiny towers (timm's test ViT at 64 px + bert_tiny) for a CPU smoke test;
  ``--default-towers`` uses the default run's towers unchanged (resnet_tiny + bert_tiny at 64 px),
  which is how the speed switches are measured on the CPU.
- The data is synthetic and already on the device: a few ``ImageTextBatch`` objects of random
  images and random token ids (``--text-length`` tokens, full attention masks, distinct image ids),
  cycled through a ``DataLoader(batch_size=None)``. Data loading is not measured.
- Each variant gets a fresh model (seed 0). The Trainer has no logger, checkpoints, progress bar
  or validation; it runs ``--warmup`` + ``--steps`` steps. The step time is the median interval
  between the ends of consecutive steps after the warm-up (on CUDA each mark waits for the GPU).
- Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the fit (statistics reset just
  before it). On CPU it is the increase of the peak RSS over the fit (``VmHWM``, reset to the
  current RSS through ``/proc/self/clear_refs``).
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward and backward of the
  model's loss (``model(batch)["loss"]``) on one batch, once per variant, before the fit, on the
  same device and under the same autocast. Only matrix products, convolutions and attention are
  counted (the optimizer step, norms and element-wise ops are not). ``flops_per_step`` is what
  runs: with activation checkpointing it includes the recomputed forward. ``model_flops_per_step``
  is counted again with checkpointing switched off; it is the same for every variant of one
  model. MFU = model FLOPs / step time / peak; HFU (hardware FLOPs utilisation) uses
  ``flops_per_step`` instead. They differ only with checkpointing.
- Peak FLOP/s comes from a table of dense bf16/fp16 tensor-core figures for the GPU name
  (TF32 figures for ``32-true``, where TF32 matmuls are enabled). ``--peak-tflops`` overrides it.
  On an unknown GPU, and on CPU, the MFU is n/a unless ``--peak-tflops`` is given.
- Cross-check: 6 x parameters x tokens, per tower (image tower parameters x (224/16)^2+1 tokens,
  text tower parameters without its embedding tables x text length, the heads once per sample).
  The counted figure is a few % higher: 6ND leaves out attention's QK^T and AV products.

Variants (``--variants``, comma-separated, run in order; ratios are to the first):
baseline, fused_adamw (``optimizer.fused=true``), unfused_adamw (``optimizer.fused=false``),
compile (``image_encoder.compile=true text_encoder.compile=true``), grad_ckpt (activation
checkpointing in both towers), channels_last (``image_encoder.channels_last=true``; only
matters for CNN towers), fp16 (``16-mixed``), fp32 (``32-true``).

Usage: python experiments/benchmarks/gpu_dual_encoder.py [--batch 256] [--steps 30] [--warmup 10]
       [--text-length 64] [--precision bf16-mixed] [--variants baseline,compile,grad_ckpt]
       [--override KEY=VALUE ...] [--peak-tflops T] [--tiny --device cpu] [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from mmresearch.data.batch import ImageTextBatch
from mmresearch.models.builder import build_model
from mmresearch.utils.memory import peak_rss_mb, start_peak_rss
from mmresearch.utils.errors import ConfigError

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
VOCAB_SIZE = 30522  # bert-base-uncased
NUM_BATCHES = 4  # distinct pre-built batches, cycled

BASE_OVERRIDES = ["optimizer.lr=1e-4"]
FULL_OVERRIDES = [
    "image_encoder=timm", "image_encoder.name=vit_base_patch16_224", "image_encoder.pretrained=false",
    "data.image_size=224",
    "text_encoder=bert_tiny", "text_encoder.config.hidden_size=768", "text_encoder.config.num_hidden_layers=12",
    "text_encoder.config.num_attention_heads=12", "text_encoder.config.intermediate_size=3072",
    "text_encoder.config.max_position_embeddings=512", "text_encoder.config.hidden_dropout_prob=0.1",
    "text_encoder.config.attention_probs_dropout_prob=0.1",
    "model.towers.image.head.out_dim=512",
]
TINY_OVERRIDES = ["image_encoder=vit_tiny", "data.image_size=64"]

#: name -> (config overrides, precision or None for --precision)
VARIANTS: Dict[str, Tuple[List[str], Optional[str]]] = {
    "baseline": ([], None),
    "fused_adamw": (["optimizer.fused=true"], None),
    "unfused_adamw": (["optimizer.fused=false"], None),
    "compile": (["image_encoder.compile=true", "text_encoder.compile=true"], None),
    "grad_ckpt": (["image_encoder.grad_checkpointing=true", "text_encoder.grad_checkpointing=true"], None),
    "channels_last": (["image_encoder.channels_last=true"], None),
    "channels_first": (["image_encoder.channels_last=false"], None),  # resnet_tiny/efficientnet_lite0 default to channels-last
    "fp16": ([], "16-mixed"),
    "fp32": ([], "32-true"),
}
PRECISIONS = ("bf16-mixed", "16-mixed", "32-true")

#: (entry, regex on torch.cuda.get_device_name(), dense bf16/fp16 tensor FLOP/s, dense TF32 FLOP/s);
#: the first match wins, so specific names come before general ones
PEAK_FLOPS: List[Tuple[str, str, float, float]] = [
    ("H100 PCIe", r"H100.*PCIe", 756e12, 378e12),
    ("H100/H200 NVL", r"H[12]00 ?NVL", 835.5e12, 417.5e12),
    ("H100 SXM", r"H100", 989.4e12, 494.7e12),  # "NVIDIA H100 80GB HBM3"
    ("H200", r"H200", 989.4e12, 494.7e12),
    ("A100", r"A100", 312e12, 156e12),
    ("L40S", r"L40S", 362.05e12, 183e12),
    ("L4", r"\bL4\b", 121e12, 60e12),
    ("RTX 4090", r"RTX 4090", 165.2e12, 82.6e12),
]


def peak_flops_for(device_name: str, precision: str) -> Optional[Tuple[str, float]]:
    """``(table entry, peak dense FLOP/s)`` of a GPU name for a Lightning precision, or None when
    the name is not in the table. bf16 and fp16 share a figure; ``32-true`` gets the TF32 one."""
    for entry, pattern, half, tf32 in PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return entry, (tf32 if precision.startswith("32") else half)
    return None


# ---- data -------------------------------------------------------------------------------------
class CycledBatches(Dataset):
    """``length`` items cycling over pre-built batches (for ``DataLoader(batch_size=None)``)."""

    def __init__(self, batches: Sequence[ImageTextBatch], length: int) -> None:
        self.batches, self.length = list(batches), length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> ImageTextBatch:
        return self.batches[i % len(self.batches)]


def synthetic_batches(n: int, batch: int, image_size: int, text_length: int, vocab: int, device: torch.device) -> List[ImageTextBatch]:
    """Random normalised images and random token ids with full masks; image ids distinct across all batches."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.arange(i * batch, (i + 1) * batch)
        out.append(ImageTextBatch(
            images=torch.randn(batch, 3, image_size, image_size, generator=g).to(device),
            image_ids=ids.to(device),
            input_ids=torch.randint(0, vocab, (batch, text_length), generator=g).to(device),
            attention_mask=torch.ones(batch, text_length, dtype=torch.long, device=device),
            text_image_ids=ids.to(device),
            text_ids=ids.to(device),
        ))
    return out


class Vocabulary:
    """Stands in for a tokenizer: the model builder only takes ``len(tokenizer)``."""

    def __len__(self) -> int:
        return VOCAB_SIZE


# ---- timing and memory ------------------------------------------------------------------------
class StepTimer(L.Callback):
    """Marks the start of the first step and the end of every step (after waiting for the GPU)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: List[float] = []

    def _mark(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.marks:
            self._mark()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._mark()

    def step_times(self, warmup: int) -> List[float]:
        return [b - a for a, b in zip(self.marks[warmup:], self.marks[warmup + 1:])]


# ---- FLOPs ------------------------------------------------------------------------------------
def _cpu_flash_fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _extra_flop_formulas() -> dict:
    """torch's FLOP table has the CUDA attention kernels but not CPU flash attention: add it."""
    aten = torch.ops.aten
    extra = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_fwd
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_bwd
    return extra


@contextlib.contextmanager
def checkpointing_off(model: nn.Module):
    """Switch activation checkpointing off (timm ``grad_checkpointing``, transformers
    ``gradient_checkpointing`` attributes) for the duration; yields how many were on."""
    switched = []
    for module in model.modules():
        for attr in ("grad_checkpointing", "gradient_checkpointing"):
            if getattr(module, attr, None) is True:
                setattr(module, attr, False)
                switched.append((module, attr))
    try:
        yield len(switched)
    finally:
        for module, attr in switched:
            setattr(module, attr, True)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def count_step_flops(model: nn.Module, batch: ImageTextBatch, device: torch.device, precision: str) -> Tuple[int, Dict[str, int]]:
    """FLOPs of one forward + backward of ``model(batch)["loss"]`` and their split by op."""
    stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else contextlib.nullcontext()
    model.train()
    with stance, FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas()) as counter:
        with _autocast(device, precision):
            loss = model(batch)["loss"]
        loss.backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def _trainable(module: nn.Module, skip_embeddings: bool = False) -> int:
    skip = set()
    if skip_embeddings:
        skip = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if p.requires_grad and id(p) not in skip)


def analytic_flops(model: nn.Module, batch: int, text_length: int) -> Optional[dict]:
    """6 x parameters x tokens per tower (None when the image tower is not a ViT: no tokens)."""
    image = model.towers["image"].encoder
    if not hasattr(getattr(image, "model", None), "patch_embed"):
        return None
    image_tokens = int(image.num_tokens)
    p_image = _trainable(image)
    p_text = _trainable(model.towers["text"].encoder, skip_embeddings=True)
    p_heads = _trainable(model.towers["image"].head) + _trainable(model.towers["text"].head)
    flops = 6 * batch * (p_image * image_tokens + p_text * text_length + p_heads)
    return {"flops_per_step": flops, "image_tokens": image_tokens, "text_tokens": text_length,
            "image_params": p_image, "text_params_without_embeddings": p_text, "head_params": p_heads}


# ---- config -----------------------------------------------------------------------------------
def compose_config(overrides: List[str], label: str) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        hint = ""
        if "not in struct" in str(err) or "Could not override" in str(err):
            hint = " (that key is not in this checkout's config under conf/)"
        raise ConfigError(f"{label}: the config overrides {overrides} do not compose{hint}: {err}") from err


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256, help="pairs per training step")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them (compilation, autotuning)")
    p.add_argument("--text-length", type=int, default=64, help="tokens per caption")
    p.add_argument("--precision", default="bf16-mixed", choices=PRECISIONS)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense TFLOP/s for the MFU (overrides the table)")
    p.add_argument("--variants", default="baseline", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override for every variant (repeatable)")
    p.add_argument("--tiny", action="store_true", help="tiny towers at 64 px (CPU smoke test)")
    p.add_argument("--default-towers", action="store_true",
                   help="the default run's towers and image size (resnet_tiny + bert_tiny, 64 px): the speed switches on the CPU")
    p.add_argument("--rounds", type=int, default=1, help="run the variant list this many times, order alternating; median per variant")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    args.variant_names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_names if v not in VARIANTS]
    if unknown or not args.variant_names:
        p.error(f"--variants: unknown {unknown or args.variants!r}; known: {', '.join(VARIANTS)}")
    if min(args.batch, args.steps, args.text_length) < 1 or args.warmup < 0:
        p.error("--batch, --steps and --text-length must be >= 1, --warmup >= 0")
    return args


# ---- one variant ------------------------------------------------------------------------------
def run_variant(name: str, cfg: DictConfig, precision: str, batches: List[ImageTextBatch], args, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    L.seed_everything(0, verbose=False)
    model = build_model(cfg, Vocabulary()).to(device)

    flops, by_op = count_step_flops(model, batches[0], device, precision)
    model_flops: Optional[int] = flops
    with checkpointing_off(model) as switched:
        if switched:
            try:
                model_flops, _ = count_step_flops(model, batches[0], device, precision)
            except torch.cuda.OutOfMemoryError:  # without checkpointing this batch may not fit
                model_flops = None
                model.zero_grad(set_to_none=True)
                gc.collect()
                torch.cuda.empty_cache()
                print(f"{name}: out of memory counting the FLOPs without activation checkpointing: "
                      "model FLOPs, TFLOP/s and MFU n/a (HFU still given)")
    analytic = analytic_flops(model, args.batch, args.text_length)

    timer = StepTimer(cuda)
    max_steps = args.warmup + args.steps
    loader = DataLoader(CycledBatches(batches, max_steps), batch_size=None, shuffle=False, num_workers=0)
    trainer = L.Trainer(accelerator=device.type, devices=1, precision=precision, max_epochs=1, max_steps=max_steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
                        benchmark=bool(cfg.trainer.get("benchmark", False)), gradient_clip_val=cfg.trainer.get("gradient_clip_val"))
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = start_peak_rss()  # trims first: an earlier variant's freed memory cannot hide this one's peak
    trainer.fit(model, train_dataloaders=loader)
    if cuda:
        torch.cuda.synchronize()
        peak, memory_measure = torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated during fit (MiB)"
    else:
        peak, memory_measure = peak_rss_mb() - base, "peak RSS increase during fit (MiB)"
    if trainer.global_step != max_steps:
        raise RuntimeError(f"variant {name}: the Trainer ran {trainer.global_step} steps, expected {max_steps}")

    times = timer.step_times(args.warmup)
    step = statistics.median(times)
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    result = {
        "name": name,
        "overrides": list(VARIANTS[name][0]),
        "precision": precision,
        "step_time_s": step,
        "step_times_s": times,
        "samples_per_s": args.batch / step,
        "peak_memory_mb": peak,
        "memory_before_fit_mb": base,
        "memory_measure": memory_measure,
        "flops_per_step": flops,
        "model_flops_per_step": model_flops,
        "flops_by_op": by_op,
        "tflops_per_s": model_flops / step / 1e12 if model_flops else None,
        "hardware_tflops_per_s": flops / step / 1e12,
        "trainable_params": _trainable(model),
        "analytic_flops_per_step": analytic["flops_per_step"] if analytic else None,
        "analytic": analytic,
        "counted_to_analytic": model_flops / analytic["flops_per_step"] if analytic and model_flops else None,
        "optimizer_fused": optimizer.defaults.get("fused") if optimizer is not None else None,
        "compiled_modules": [n for n, m in model.named_modules() if getattr(m, "_compiled_call_impl", None) is not None],
    }
    del trainer, model, loader, optimizer
    if result["compiled_modules"]:
        torch._dynamo.reset()  # the next variant's fresh model compiles from scratch, not against a cache limit
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def merge_rounds(rounds: List[dict], batch: int) -> dict:
    """One variant's result over its rounds: the median of the rounds' median step times (and
    the throughput from it), the largest peak memory."""
    result = dict(rounds[0])
    step = statistics.median(r["step_time_s"] for r in rounds)
    result.update(
        step_time_s=step, samples_per_s=batch / step, round_step_time_s=[r["step_time_s"] for r in rounds],
        step_times_s=[t for r in rounds for t in r["step_times_s"]], peak_memory_mb=max(r["peak_memory_mb"] for r in rounds),
        tflops_per_s=result["model_flops_per_step"] / step / 1e12 if result["model_flops_per_step"] else None,
        hardware_tflops_per_s=result["flops_per_step"] / step / 1e12,
    )
    return result


def _machine(device: torch.device, threads: int) -> dict:
    import lightning
    import timm
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
        except OSError:
            pass
    return {"device": device.type, "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "lightning": lightning.__version__, "timm": timm.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "threads": threads, "cpu_count": os.cpu_count()}


def _fmt(x: Optional[float], spec: str, na: str = "n/a") -> str:
    return na if x is None else format(x, spec)


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    for logger in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available here (use --device cpu, with --tiny for a smoke test)")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = torch.device(args.device)

    # every variant's config first: a bad override fails before anything runs
    towers_overrides = [] if args.default_towers else TINY_OVERRIDES if args.tiny else FULL_OVERRIDES
    base = BASE_OVERRIDES + towers_overrides + list(args.override)
    configs = {}
    for name in args.variant_names:
        overrides, precision = VARIANTS[name]
        configs[name] = (compose_config(base + overrides, f"variant {name!r}"), precision or args.precision)
    first = configs[args.variant_names[0]][0]
    image_size = int(first.data.image_size)
    max_positions = (first.text_encoder.get("config") or {}).get("max_position_embeddings")
    if max_positions is not None and args.text_length > int(max_positions):
        raise ConfigError(f"--text-length {args.text_length} > text_encoder.config.max_position_embeddings={max_positions}")

    machine = _machine(device, args.threads)
    batches = synthetic_batches(NUM_BATCHES, args.batch, image_size, args.text_length, VOCAB_SIZE, device)
    towers = (f"{first.image_encoder.name} + bert {first.text_encoder.config.hidden_size}x"
              f"{first.text_encoder.config.num_hidden_layers}" if first.text_encoder.get("config") else first.image_encoder.name)
    print(f"dual encoder ({towers}, random init), {image_size} px, text {args.text_length} tokens, batch {args.batch}; "
          f"{machine['device_name']}, torch {machine['torch']}, CUDA {machine['cuda']}, {args.threads} threads; "
          f"{args.warmup} warm-up + {args.steps} timed steps per variant")

    runs: Dict[str, List[dict]] = {name: [] for name in args.variant_names}
    for round_ in range(args.rounds):  # the order alternates, so drift in the machine's speed hits every variant alike
        for name in (args.variant_names if round_ % 2 == 0 else args.variant_names[::-1]):
            cfg, precision = configs[name]
            print(f"running {name} ({precision}{', ' + ' '.join(VARIANTS[name][0]) if VARIANTS[name][0] else ''}), "
                  f"round {round_ + 1}/{args.rounds} ...", flush=True)
            runs[name].append(run_variant(name, cfg, precision, batches, args, device))
    results = []
    for name in args.variant_names:
        result = merge_rounds(runs[name], args.batch)
        precision = result["precision"]
        if args.peak_tflops is not None:
            peak, source = args.peak_tflops * 1e12, "--peak-tflops"
        elif device.type == "cuda" and (found := peak_flops_for(machine["device_name"], precision)):
            peak = found[1]
            kind = "TF32" if precision.startswith("32") else "bf16/fp16"
            source = f"{found[1] / 1e12:g} TFLOP/s, table entry {found[0]!r} ({kind} dense) for {machine['device_name']!r}"
        else:
            peak, source = None, None
        result["peak_flops"] = peak
        result["peak_flops_source"] = source
        result["mfu"] = result["model_flops_per_step"] / result["step_time_s"] / peak if peak and result["model_flops_per_step"] else None
        result["hfu"] = result["flops_per_step"] / result["step_time_s"] / peak if peak else None
        results.append(result)
    for r in results:
        r["samples_per_s_ratio"] = r["samples_per_s"] / results[0]["samples_per_s"]
        r["peak_memory_ratio"] = r["peak_memory_mb"] / results[0]["peak_memory_mb"] if results[0]["peak_memory_mb"] > 0 else None

    mem = "peak MiB" if device.type == "cuda" else "peak RSS +MiB"
    print(f"{'variant':<14} {'precision':<10} {'ms/step':>9} {'samples/s':>10} {'x first':>8} {mem:>14} {'mem x':>8} "
          f"{'GFLOP/step':>11} {'TFLOP/s':>8} {'MFU':>7} {'HFU':>7}")
    for r in results:
        print(f"{r['name']:<14} {r['precision']:<10} {r['step_time_s'] * 1000:9.1f} {r['samples_per_s']:10.1f} "
              f"{r['samples_per_s_ratio']:8.3f} {r['peak_memory_mb']:14.0f} {_fmt(r['peak_memory_ratio'], '8.3f'):>8} "
              f"{_fmt(r['model_flops_per_step'] and r['model_flops_per_step'] / 1e9, '11.1f'):>11} {_fmt(r['tflops_per_s'], '8.2f'):>8} "
              f"{_pct(r['mfu']):>7} {_pct(r['hfu']):>7}")
    for r in results:
        if r["flops_per_step"] != r["model_flops_per_step"]:
            ratio = f" (x{r['flops_per_step'] / r['model_flops_per_step']:.3f})" if r["model_flops_per_step"] else ""
            print(f"{r['name']}: {r['flops_per_step'] / 1e9:.1f} GFLOP/step executed with the recomputed forward"
                  f"{ratio}; HFU counts them, MFU does not")
    sources = sorted({r["peak_flops_source"] for r in results if r["peak_flops_source"]})
    for s in sources:
        print(f"peak FLOP/s: {s}")
    if not sources:
        why = "CPU" if device.type == "cpu" else f"{machine['device_name']!r} is not in the peak-FLOPs table"
        print(f"MFU n/a ({why}): pass --peak-tflops T (dense TFLOP/s of this device at this precision)")
    a = results[0]
    if a["analytic"] and a["counted_to_analytic"]:
        an = a["analytic"]
        print(f"cross-check: 6 x params x tokens = 6 x {args.batch} x ({an['image_params'] / 1e6:.1f}M x {an['image_tokens']} "
              f"image tokens + {an['text_params_without_embeddings'] / 1e6:.1f}M x {an['text_tokens']} text tokens + "
              f"{an['head_params'] / 1e6:.2f}M heads) = {an['flops_per_step'] / 1e9:.1f} GFLOP/step; counted / analytic = "
              f"{a['counted_to_analytic']:.3f} (6ND leaves out attention's QK^T and AV products, 12 x layers x T^2 x width "
              f"per sample, and the B x B logits)")

    report = {
        "benchmark": "gpu_dual_encoder",
        "machine": machine,
        "device_name": machine["device_name"], "torch": machine["torch"], "cuda": machine["cuda"],
        "batch": args.batch, "text_length": args.text_length, "image_size": image_size, "precision": args.precision,
        "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "tiny": args.tiny, "towers": towers,
        "overrides": base, "peak_tflops_arg": args.peak_tflops,
        "variants": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        sys.exit(f"error: {err}")
