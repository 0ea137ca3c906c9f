"""WiSE-FT's weight interpolation: linear in every floating tensor, exact at the ends, LoRA by its
product, integer buffers untouched."""

import pytest
import torch

from mmresearch.models.wise_ft import interpolate_weights


def test_linear_between_the_ends_and_exact_at_them():
    initial = {"w": torch.tensor([0.0, 1.0, 2.0]), "steps": torch.tensor([3])}
    tuned = {"w": torch.tensor([1.0, 3.0, -2.0]), "steps": torch.tensor([9])}
    half = interpolate_weights(initial, tuned, 0.5)
    assert torch.equal(half["w"], torch.tensor([0.5, 2.0, 0.0])) and torch.equal(half["steps"], tuned["steps"])
    assert torch.equal(interpolate_weights(initial, tuned, 1.0)["w"], tuned["w"])
    assert torch.equal(interpolate_weights(initial, tuned, 0.0)["w"], initial["w"])
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interpolate_weights(initial, tuned, 1.5)


def test_lora_interpolates_the_merged_update():
    g = torch.Generator().manual_seed(0)
    a0, a1, b1 = (torch.randn(2, 4, generator=g) for _ in range(3))
    b1 = b1.T  # [4, 2]
    initial = {"q.lora_A.default.weight": a0, "q.lora_B.default.weight": torch.zeros(4, 2)}
    tuned = {"q.lora_A.default.weight": a1, "q.lora_B.default.weight": b1}
    mixed = interpolate_weights(initial, tuned, 0.3)
    torch.testing.assert_close(mixed["q.lora_B.default.weight"] @ mixed["q.lora_A.default.weight"], 0.3 * (b1 @ a1))
