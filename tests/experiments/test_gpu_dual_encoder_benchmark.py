"""experiments/benchmarks/gpu_dual_encoder.py: a tiny CPU run of two variants reports consistent
figures (FLOPs, MFU, JSON), and the peak-FLOPs table matches GPU names."""

import json
import math
import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from helpers import load_benchmark  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("gpu_dual_encoder")


@pytest.fixture(autouse=True)
def _keep_threads():
    """main() calls torch.set_num_threads(--threads): give the rest of the session its own setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_tiny_cpu_run_reports_consistent_figures(bench, tmp_path):
    out = tmp_path / "results.json"
    report = bench.main(["--tiny", "--device", "cpu", "--batch", "8", "--steps", "3", "--warmup", "1",
                         "--precision", "32-true", "--peak-tflops", "1", "--variants", "baseline,grad_ckpt", "--threads", "1",
                         "--out", str(out)])
    variants = {v["name"]: v for v in report["variants"]}
    assert list(variants) == ["baseline", "grad_ckpt"]
    for v in variants.values():
        assert v["samples_per_s"] > 0 and v["flops_per_step"] > 0 and v["model_flops_per_step"] > 0
        assert len(v["step_times_s"]) == 3
        assert v["samples_per_s"] == pytest.approx(8 / v["step_time_s"], rel=1e-12)
        assert v["peak_flops"] == 1e12
        # MFU from the model FLOPs, HFU from what ran (with checkpointing: the recomputed forward too)
        assert v["mfu"] == pytest.approx(v["model_flops_per_step"] / v["step_time_s"] / 1e12, rel=1e-9)
        assert v["hfu"] == pytest.approx(v["flops_per_step"] / v["step_time_s"] / 1e12, rel=1e-9)
        assert v["analytic_flops_per_step"] > 0
        assert 1.0 < v["counted_to_analytic"] < 1.3  # attention products are not in 6ND
    base, ckpt = variants["baseline"], variants["grad_ckpt"]
    assert base["flops_per_step"] == base["model_flops_per_step"]
    # FlopCounterMode sees the forward that activation checkpointing recomputes in backward...
    assert ckpt["flops_per_step"] > base["flops_per_step"]
    # ...and with checkpointing switched off the same model counts exactly the baseline's FLOPs
    assert ckpt["model_flops_per_step"] == base["flops_per_step"]
    assert base["samples_per_s_ratio"] == 1.0
    assert ckpt["samples_per_s_ratio"] == pytest.approx(ckpt["samples_per_s"] / base["samples_per_s"])

    written = json.loads(out.read_text())
    assert written["batch"] == 8 and written["text_length"] == 64 and written["precision"] == "32-true"
    assert written["device_name"] and written["torch"]
    for got, want in zip(written["variants"], report["variants"]):
        for key in ("name", "step_time_s", "samples_per_s", "flops_per_step", "model_flops_per_step", "mfu", "hfu",
                    "peak_memory_mb", "samples_per_s_ratio"):
            assert got[key] == want[key] or (isinstance(want[key], float) and math.isclose(got[key], want[key], rel_tol=1e-15))


def test_unknown_override_fails_before_running(bench):
    with pytest.raises(ValueError, match="image_encoder.no_such_key"):
        bench.main(["--tiny", "--device", "cpu", "--variants", "baseline", "--override", "image_encoder.no_such_key=1"])


def test_peak_flops_lookup(bench):
    assert bench.peak_flops_for("NVIDIA H100 80GB HBM3", "bf16-mixed") == ("H100 SXM", 989.4e12)
    assert bench.peak_flops_for("NVIDIA H100 80GB HBM3", "16-mixed") == ("H100 SXM", 989.4e12)
    assert bench.peak_flops_for("NVIDIA H100 PCIe", "bf16-mixed") == ("H100 PCIe", 756e12)
    assert bench.peak_flops_for("NVIDIA H200", "bf16-mixed") == ("H200", 989.4e12)
    assert bench.peak_flops_for("NVIDIA A100-SXM4-80GB", "bf16-mixed") == ("A100", 312e12)
    assert bench.peak_flops_for("NVIDIA L40S", "bf16-mixed") == ("L40S", 362.05e12)
    assert bench.peak_flops_for("NVIDIA L4", "bf16-mixed") == ("L4", 121e12)
    assert bench.peak_flops_for("NVIDIA GeForce RTX 4090", "bf16-mixed") == ("RTX 4090", 165.2e12)
    assert bench.peak_flops_for("NVIDIA H100 80GB HBM3", "32-true") == ("H100 SXM", 494.7e12)  # TF32
    assert bench.peak_flops_for("NVIDIA L40", "bf16-mixed") is None  # not the L4
    assert bench.peak_flops_for("Tesla T4", "bf16-mixed") is None
    assert bench.peak_flops_for("", "bf16-mixed") is None
