"""EpochMetrics: one log line per validation (none for the sanity check), the checkpoint's metric
first with the best so far by the checkpoint's mode, and that metric on the progress bar."""

import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from mmresearch.callbacks.epoch_metrics import EpochMetrics, _best_so_far, format_epoch_line

RSUM = [1.0, 3.0, 2.0]  # per epoch: the best is epoch 1's


class _Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        rsum = -1.0 if self.trainer.sanity_checking else RSUM[self.current_epoch]
        self.log_dict({"val/rsum": rsum, "val/t2i_R@1": rsum / 10, "val/a_first_by_name": 0.5})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 2)), batch_size=1)

    def val_dataloader(self):
        return self.train_dataloader()


def test_one_line_per_epoch_best_so_far_and_the_progress_bar(tmp_path, caplog):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/rsum", mode="max")
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=3, callbacks=[EpochMetrics(), checkpoint], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1)
    with caplog.at_level(logging.INFO, logger="mmresearch.callbacks.epoch_metrics"):
        trainer.fit(_Model())
    lines = [r.getMessage() for r in caplog.records if r.name == "mmresearch.callbacks.epoch_metrics"]
    assert lines == [
        "epoch 0 step 2 | val/rsum 1.0000 (best 1.0000) | val/a_first_by_name 0.5000 | val/t2i_R@1 0.1000",
        "epoch 1 step 4 | val/rsum 3.0000 (best 3.0000) | val/a_first_by_name 0.5000 | val/t2i_R@1 0.3000",
        "epoch 2 step 6 | val/rsum 2.0000 (best 3.0000) | val/a_first_by_name 0.5000 | val/t2i_R@1 0.2000",
    ]
    assert trainer.progress_bar_metrics["val/rsum"] == 2.0  # the last validation's, shown beside the loss


def test_best_follows_the_checkpoint_mode_and_lines_without_a_monitor():
    checkpoint = ModelCheckpoint(monitor="val/loss", mode="min")
    assert _best_so_far(checkpoint, 0.5) == 0.5  # nothing kept yet
    checkpoint.best_model_score = torch.tensor(0.4)
    assert _best_so_far(checkpoint, 0.5) == pytest.approx(0.4) and _best_so_far(checkpoint, 0.3) == 0.3
    assert format_epoch_line(0, 1, {"val/x": 1.0, "train/loss": 2.0}) == "epoch 0 step 1 | val/x 1.0000"
