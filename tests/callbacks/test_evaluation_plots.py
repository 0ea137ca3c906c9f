"""EvaluationPlots: four PNGs after trainer.test, logged to TensorBoard / W&B, skips instead of crashing."""

import warnings
from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import OmegaConf
from torch import nn

from mmresearch.callbacks.evaluation_plots import FIGURES, EvaluationPlots
from mmresearch.data.datamodule import ShapesDataModule
from mmresearch.models.dual_encoder import DualEncoder
from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.modules.encoders.text import HFTextEncoder
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.losses import InfoNCELoss
from mmresearch.modules.temperature import LearnableTemperature

TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40)


@pytest.fixture(scope="module")
def datamodule():
    return ShapesDataModule(train_size=64, val_size=32, test_size=32, batch_size=16, eval_batch_size=32)


@pytest.fixture(scope="module")
def model(datamodule):
    torch.manual_seed(0)
    return DualEncoder.image_text(
        image_encoder=TimmImageEncoder("resnet10t", img_size=64, pool="flatten", model_kwargs=dict(channels=(8, 8, 16, 16), stem_width=8)),
        text_encoder=HFTextEncoder(config=TINY_BERT, vocab_size=datamodule.vocab_size),
        image_head=partial(ProjectionHead, out_dim=16),
        text_head=partial(ProjectionHead, out_dim=16),
        loss=InfoNCELoss(),
        temperature=LearnableTemperature(init_tau=0.07),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )


def _trainer(tmp_path, callback, logger=False):
    return L.Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", logger=logger, callbacks=[callback],
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, precision="32-true")


def _assert_pngs(paths, folder):
    assert set(paths) == set(FIGURES)
    for name, path in paths.items():
        assert path == folder / f"{name}.png"
        assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000


def test_writes_the_four_pngs_under_the_run_directory(tmp_path, model, datamodule):
    callback = EvaluationPlots(num_images=8, num_queries=4, k=5)
    trainer = _trainer(tmp_path, callback)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="EvaluationPlots")  # nothing skipped
        trainer.test(model, datamodule=datamodule)
    _assert_pngs(callback.saved_paths, tmp_path / "plots")

    # the gathered data lines up with the dataset: captions by position, images un-normalised
    data = EvaluationPlots(num_images=4, max_projection_points=20)._gather(trainer, model, datamodule)
    ds = datamodule.test_dataset
    assert data.num_images == 20 and data.image_ids.tolist() == list(range(20))
    assert data.captions == [c for cs in ds.captions[:20] for c in cs]
    assert data.text_pos.tolist() == [i for i in range(20) for _ in ds.captions[i]]
    assert (data.images.int() - ds.images[:20].int()).abs().max() <= 1
    assert data.image_emb.shape == (20, 16) and data.text_emb.shape == (len(data.captions), 16)
    torch.testing.assert_close(data.image_emb, model.embed_images(model.transfer_batch_to_device(
        next(iter(datamodule.test_dataloader())), model.device, 0).images[:20]), atol=1e-5, rtol=1e-5)
    assert data.labels.shape == (20, 3)


def test_logs_the_figures_to_tensorboard(tmp_path, model, datamodule):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=tmp_path, name="tb", version="")
    callback = EvaluationPlots(num_images=4, num_queries=2, k=3, projection="tsne", label_kind="colour", dirpath=str(tmp_path / "figs"))
    _trainer(tmp_path, callback, logger=logger).test(model, datamodule=datamodule)
    _assert_pngs(callback.saved_paths, tmp_path / "figs")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) >= {f"plots/{name}" for name in FIGURES}
    heat = events.Images("plots/similarity_heatmap")[0]
    assert heat.width > 300 and heat.height > 300


class _NoEmbeddings(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def test_step(self, batch, batch_idx):
        pass


class _NotImplemented(_NoEmbeddings):
    def embed_images(self, images):
        raise NotImplementedError

    def embed_texts(self, input_ids, attention_mask):
        raise NotImplementedError


@pytest.mark.parametrize("module", [_NoEmbeddings, _NotImplemented])
def test_a_model_without_embeddings_is_skipped_with_a_warning(tmp_path, datamodule, module):
    callback = EvaluationPlots()
    with pytest.warns(UserWarning, match="EvaluationPlots: skipped all figures.*embed_images"):
        _trainer(tmp_path, callback).test(module(), datamodule=datamodule)
    assert callback.saved_paths == {} and not (tmp_path / "plots").exists()


def test_an_unknown_label_kind_skips_only_the_projection(tmp_path, model, datamodule):
    callback = EvaluationPlots(num_images=4, num_queries=2, label_kind="size")
    with pytest.warns(UserWarning, match="skipped embedding_projection.*'size'"):
        _trainer(tmp_path, callback).test(model, datamodule=datamodule)
    assert set(callback.saved_paths) == set(FIGURES) - {"embedding_projection"}


def test_wandb_and_tensorboard_loggers_get_the_png(tmp_path):
    png = tmp_path / "fig.png"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1])
    fig.savefig(png)

    class FakeWandb(WandbLogger):
        def __init__(self):  # no wandb run
            self.calls = []

        def log_image(self, key, images, step=None, **kwargs):
            self.calls.append((key, images, step))

    class FakeTensorBoard(TensorBoardLogger):
        def __init__(self):
            self.calls = []

        @property
        def experiment(self):
            return SimpleNamespace(add_image=lambda *args, **kwargs: self.calls.append((args, kwargs)))

    wandb, tensorboard = FakeWandb(), FakeTensorBoard()
    csv = SimpleNamespace()  # any other logger: files only
    EvaluationPlots._log(SimpleNamespace(loggers=[wandb, tensorboard, csv], global_step=7), "similarity_heatmap", png)
    assert wandb.calls == [("plots/similarity_heatmap", [str(png)], 7)]
    (args, kwargs), = tensorboard.calls
    assert args[0] == "plots/similarity_heatmap" and args[2] == 7 and kwargs == {"dataformats": "HWC"}
    assert args[1].dtype.name == "uint8" and args[1].shape == (100, 200, 3)


def test_config_entry_instantiates_and_bad_arguments_fail_early():
    node = OmegaConf.create({"_target_": "mmresearch.callbacks.evaluation_plots.EvaluationPlots", "num_images": 8,
                             "num_queries": 4, "k": 5, "projection": "pca", "max_projection_points": 1000,
                             "label_kind": "shape", "dirpath": None})
    callback = instantiate(node)
    assert isinstance(callback, EvaluationPlots) and callback.k == 5 and callback.dirpath is None
    with pytest.raises(ValueError, match="projection"):
        EvaluationPlots(projection="umap")
    with pytest.raises(ValueError, match="num_images"):
        EvaluationPlots(num_images=0)
