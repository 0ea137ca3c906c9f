"""PartsSummary: the model's nn parts with their parameters (frozen ones apart), no torchmetrics
metrics, no FLOPs; totals checked against a count of the parameters."""

import logging

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from mmresearch.callbacks.model_summary import PartsSummary, summary_table


class _Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.val_metric = MeanMetric()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.frozen = nn.Linear(8, 3)
        self.frozen.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(()))  # a parameter of the model itself

    def forward(self, x):
        return self.frozen(self.encoder(x)) * self.scale


def _rows(table):
    return {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in table.splitlines() if line.count("|") == 3}


def test_parts_without_metrics_or_flops_and_exact_totals():
    model = _Model()
    table = summary_table(model)
    rows = _rows(table)
    assert list(rows) == ["Name", "encoder", "frozen"]  # no metric row, max_depth 1
    assert rows["encoder"] == ["Sequential", "112", "112"] and rows["frozen"] == ["Linear", "27", "0"]
    assert "FLOP" not in table.upper() and "MeanMetric" not in table
    total = sum(p.numel() for p in model.parameters())  # 112 + 27 + 1
    assert f"{total - 27}  trainable params" in table and "27  non-trainable params" in table and f"{total}  total params" in table
    assert f"{total * 4 / 1e6:,.1f}  MB of parameters" in table


def test_depth_two_lists_nested_parts_and_skips_inside_metrics():
    rows = _rows(summary_table(_Model(), max_depth=2))
    assert list(rows) == ["Name", "encoder", "encoder.0", "encoder.1", "encoder.2", "frozen"]


def test_the_callback_logs_once_on_rank_zero_and_respects_enabled(tmp_path, caplog):
    model = _Model()
    trainer = L.Trainer(default_root_dir=tmp_path, callbacks=[PartsSummary()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, max_epochs=0)
    with caplog.at_level(logging.INFO, logger="mmresearch.callbacks.model_summary"):
        PartsSummary().on_fit_start(trainer, model)
        PartsSummary(enabled=False).on_fit_start(trainer, model)
        PartsSummary(max_depth=0).on_fit_start(trainer, model)
    summaries = [r for r in caplog.records if r.name == "mmresearch.callbacks.model_summary"]
    assert len(summaries) == 1 and "encoder" in summaries[0].getMessage()
    # as a ModelSummary it replaces Lightning's default summary (which would list the metric)
    assert sum(isinstance(c, L.pytorch.callbacks.ModelSummary) for c in trainer.callbacks) == 1


def test_wired_to_trainer_enable_model_summary(compose_cfg):
    from mmresearch.utils.instantiate import build_dict

    for flag in (True, False):
        callbacks = build_dict(compose_cfg([f"trainer.enable_model_summary={str(flag).lower()}"]), "callbacks")
        assert [c.enabled for c in callbacks if isinstance(c, PartsSummary)] == [flag]
