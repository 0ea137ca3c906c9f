"""The README's "Extending mmresearch", worked: a new objective added through config alone.

``UniformityObjective`` (Wang & Isola, 2020: ``log mean_{i != j} exp(-t ||x_i - x_j||^2)`` of one
modality's embeddings) lives in this test module and reaches the dual encoder by one override:
``+model.objectives.uniformity={_target_: test_extending.UniformityObjective, weight: 0.1}``.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from mmresearch.data.tokenizer import build_shapes_tokenizer
from mmresearch.models.builder import build_model
from mmresearch.modules.objectives import Objective
from mmresearch.train import CONFIG_DIR
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build

from helpers import FAST


class UniformityObjective(Objective):
    """Spreads one modality's embeddings over the sphere: ``log mean_{i != j} exp(-t d_ij^2)``."""

    def __init__(self, weight: float = 1.0, modality: str = "image", t: float = 2.0) -> None:
        super().__init__(weight)
        self.modality, self.t = modality, float(t)

    def attach(self, model, name):
        super().attach(model, name)
        if self.modality not in getattr(model, "modalities", ()):
            raise ConfigError(f"model.objectives.{name}.modality={self.modality!r}: the model has no such tower")

    def forward(self, model, batch, outputs):
        x = outputs.embeddings[self.modality]  # [N, E]
        d2 = torch.cdist(x, x).pow(2)
        off = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        return {self.name: torch.log(torch.exp(-self.t * d2[off]).mean())}


TOY = "+model.objectives.uniformity={_target_: test_extending.UniformityObjective, weight: 0.1, modality: text}"


def _cfg(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[*FAST, "data.train_size=64", "data.batch_size=16", *overrides])


def test_a_new_objective_joins_the_weighted_sum_through_config_alone():
    cfg = _cfg([TOY])
    tokenizer = build_shapes_tokenizer()
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    assert list(model.objectives) == ["image_text", "uniformity"]
    dm = build(cfg, "data", tokenizer=tokenizer)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    terms = model(batch)
    assert set(terms) == {"image_text", "image_text_loss_i2t", "image_text_loss_t2i", "uniformity", "loss"}
    assert torch.equal(terms["loss"], 0 + 1.0 * terms["image_text"] + 0.1 * terms["uniformity"])
    # and it trains: a few real steps move the text tower
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert "train/uniformity" in trainer.logged_metrics
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n.startswith("towers.text"))


def test_its_options_are_checked_against_the_model():
    cfg = _cfg([TOY.replace("modality: text", "modality: audio")])
    with pytest.raises(ConfigError, match=r"model\.objectives\.uniformity\.modality='audio'"):
        build_model(cfg, build_shapes_tokenizer())
