"""``EvaluationPlots``: qualitative figures of the test split at the end of testing.

After ``trainer.test`` (on global rank zero only) it embeds the first test images and their
captions with the model and writes four PNGs to ``<run dir>/plots/`` (or ``dirpath``):

- ``similarity_heatmap.png``: the first ``num_images`` images vs their first captions.
- ``retrieval_text_to_image.png``: ``num_queries`` captions and their top-``k`` images.
- ``retrieval_image_to_text.png``: ``num_queries`` images and their top-``k`` captions.
- ``embedding_projection.png``: a PCA / t-SNE of up to ``max_projection_points`` image embeddings,
  coloured by the class labels of kind ``label_kind`` (``shape``, ``colour`` or ``count``).

Retrieval is among the gathered images / captions (at most ``max(num_images,
max_projection_points)`` images), not the whole split; the titles say how many. The figures go to
every WandbLogger (``log_image``) and TensorBoardLogger (``add_image``) of the trainer; other
loggers (CSV) get the files only. A missing piece (no ``embed_images``, no labels, ...) skips the
affected figures with a warning and never stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import move_data_to_device, rank_zero_warn
from torch import Tensor

from mmresearch.evaluation import plots

FIGURES = ("similarity_heatmap", "retrieval_text_to_image", "retrieval_image_to_text", "embedding_projection")
PROJECTIONS = ("pca", "tsne")


@dataclass
class _Gathered:
    """Embedded test data, on the CPU: ``N`` images and the ``T`` captions of those images."""

    images: Tensor  # uint8 [N, 3, H, W], for display
    image_ids: Tensor  # [N]
    image_emb: Tensor  # float [N, E]
    labels: Optional[Tensor]  # [N, K] or None
    text_emb: Tensor  # float [T, E]
    text_image_ids: Tensor  # [T]
    text_pos: Tensor  # [T] position (0..N-1) of each caption's image among the gathered images
    captions: List[str]  # T caption strings

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"EvaluationPlots.{name} must be an integer >= 1, got {value!r}")
    return int(value)


class EvaluationPlots(Callback):
    """Writes and logs qualitative retrieval figures at the end of ``trainer.test``.

    Args:
        num_images: images (and their first captions) in the similarity heatmap.
        num_queries: captions in the text-to-image grid and images in the image-to-text grid.
        k: retrieved items shown per query.
        projection: ``"pca"`` or ``"tsne"`` for the embedding projection.
        max_projection_points: images in the projection (also caps the retrieval gallery).
        label_kind: which class labels colour the projection (one of ``datamodule.label_names``).
        dirpath: folder of the PNGs; None: ``<trainer.default_root_dir>/plots``.

    After a test run ``saved_paths`` maps each written figure's name to its PNG path.
    """

    def __init__(
        self,
        num_images: int = 8,
        num_queries: int = 4,
        k: int = 5,
        projection: str = "pca",
        max_projection_points: int = 1000,
        label_kind: str = "shape",
        dirpath: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.num_images = _positive_int("num_images", num_images)
        self.num_queries = _positive_int("num_queries", num_queries)
        self.k = _positive_int("k", k)
        self.max_projection_points = _positive_int("max_projection_points", max_projection_points)
        if projection not in PROJECTIONS:
            raise ValueError(f"EvaluationPlots.projection must be one of {list(PROJECTIONS)}, got {projection!r}")
        self.projection = projection
        self.label_kind = str(label_kind)
        self.dirpath = dirpath
        self.saved_paths: Dict[str, Path] = {}

    # ------------------------------------------------------------------------------------------
    # Lightning hook

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.saved_paths = {}
        if not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                self._make_plots(trainer, pl_module)
        except Exception as err:  # plots are a by-product: never fail the run for them
            rank_zero_warn(f"EvaluationPlots: no figures written: {type(err).__name__}: {err}")
        finally:
            pl_module.train(was_training)

    # ------------------------------------------------------------------------------------------

    def _make_plots(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not callable(getattr(datamodule, "test_dataloader", None)):
            rank_zero_warn("EvaluationPlots: skipped all figures: the trainer has no datamodule with a test_dataloader()")
            return
        missing = [name for name in ("embed_images", "embed_texts") if not callable(getattr(pl_module, name, None))]
        if missing or not getattr(pl_module, "has_embeddings", True):
            rank_zero_warn(f"EvaluationPlots: skipped all figures: the model has no {' / '.join(missing) or 'image/text embeddings'}")
            return
        try:
            data = self._gather(trainer, pl_module, datamodule)
        except NotImplementedError:
            rank_zero_warn(
                f"EvaluationPlots: skipped all figures: {type(pl_module).__name__} does not implement embed_images / embed_texts"
            )
            return
        if data is None:
            return

        out_dir = Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "plots"
        builders = {
            "similarity_heatmap": self._heatmap,
            "retrieval_text_to_image": self._text_to_image,
            "retrieval_image_to_text": self._image_to_text,
            "embedding_projection": lambda d: self._projection(d, datamodule),
        }
        for name in FIGURES:
            try:
                fig = builders[name](data)
            except Exception as err:
                rank_zero_warn(f"EvaluationPlots: skipped {name}: {type(err).__name__}: {err}")
                continue
            if fig is None:
                continue
            path = plots.save_figure(fig, out_dir / f"{name}.png")
            self.saved_paths[name] = path
            self._log(trainer, name, path)

    # ------------------------------------------------------------------------------------------
    # Data

    def _gather(self, trainer: L.Trainer, pl_module: L.LightningModule, datamodule) -> Optional[_Gathered]:
        """Embed test batches until enough images are gathered."""
        needed = max(self.num_images, self.num_queries, self.max_projection_points)
        precision = trainer.precision_plugin
        device = pl_module.device
        images, image_ids, image_emb, labels = [], [], [], []
        text_emb, text_image_ids, text_pos, captions = [], [], [], []
        have_labels = True
        offset = 0
        for batch in datamodule.test_dataloader():
            if offset >= needed:
                break
            fields = ("images", "image_ids", "input_ids", "attention_mask", "text_image_ids")
            if not all(hasattr(batch, f) for f in fields):
                rank_zero_warn(
                    f"EvaluationPlots: skipped all figures: test batches ({type(batch).__name__}) are not image-text "
                    f"batches with {', '.join(fields)}"
                )
                return None
            m = min(batch.images.shape[0], needed - offset)
            ids = batch.image_ids[:m].cpu()
            # position of each caption's image in this batch (-1: not among the kept images)
            tids = batch.text_image_ids.cpu()
            match = tids[:, None] == ids[None, :]
            local = torch.where(match.any(dim=1), match.float().argmax(dim=1), torch.full_like(tids, -1))
            keep = local >= 0

            imgs = move_data_to_device(batch.images[:m], device)
            input_ids = move_data_to_device(batch.input_ids[keep], device)
            mask = move_data_to_device(batch.attention_mask[keep], device)
            with precision.test_step_context():
                e_img = pl_module.embed_images(precision.convert_input(imgs))
                e_txt = pl_module.embed_texts(input_ids, mask)

            images.append(self._display_images(batch.images[:m], datamodule))
            image_ids.append(ids)
            image_emb.append(e_img.detach().float().cpu())
            text_emb.append(e_txt.detach().float().cpu())
            text_image_ids.append(tids[keep])
            text_pos.append(local[keep] + offset)
            captions.extend(self._caption_texts(datamodule, batch, keep, offset, m))
            batch_labels = getattr(batch, "labels", None)
            if batch_labels is None:
                have_labels = False
            else:
                labels.append(batch_labels[:m].cpu())
            offset += m
        if offset == 0:
            rank_zero_warn("EvaluationPlots: skipped all figures: the test dataloader is empty")
            return None
        return _Gathered(
            images=torch.cat(images),
            image_ids=torch.cat(image_ids),
            image_emb=torch.cat(image_emb),
            labels=torch.cat(labels) if have_labels and labels else None,
            text_emb=torch.cat(text_emb),
            text_image_ids=torch.cat(text_image_ids),
            text_pos=torch.cat(text_pos),
            captions=captions,
        )

    @staticmethod
    def _display_images(images: Tensor, datamodule) -> Tensor:
        """Normalised float ``[B, 3, H, W]`` -> uint8, with the datamodule's ``mean`` / ``std``
        (per-image min-max scaling when it has none)."""
        x = images.detach().float().cpu()
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is not None and std is not None:
            mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
            std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
            x = x * std_t + mean_t
        else:
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            x = (x - lo) / (hi - lo).clamp_min(1e-8)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    @staticmethod
    def _caption_texts(datamodule, batch, keep: Tensor, offset: int, m: int) -> List[str]:
        """Strings of the kept captions: from ``datamodule.test_dataset.captions`` (the test loader
        is unshuffled, so batch position = dataset index), else decoded by the tokenizer."""
        n = int(keep.sum())
        dataset = getattr(datamodule, "test_dataset", None)
        per_image = getattr(dataset, "captions", None)
        if per_image is not None and offset + m <= len(per_image):
            texts = [str(c) for i in range(offset, offset + m) for c in per_image[i]]
            if len(texts) == n:
                return texts
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "batch_decode"):
            return list(tokenizer.batch_decode(batch.input_ids[keep].cpu(), skip_special_tokens=True))
        text_ids = getattr(batch, "text_ids", None)
        ids = text_ids[keep].tolist() if text_ids is not None else range(n)
        return [f"caption {i}" for i in ids]

    # ------------------------------------------------------------------------------------------
    # Figures

    @staticmethod
    def _first_captions(data: _Gathered, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The images among ``positions`` that have a caption, and the index of their first caption."""
        pos = data.text_pos.numpy()
        first = {}
        for t, p in enumerate(pos):
            first.setdefault(int(p), t)
        kept = np.array([p for p in positions if int(p) in first], dtype=np.int64)
        return kept, np.array([first[int(p)] for p in kept], dtype=np.int64)

    @staticmethod
    def _spread(n: int, q: int, shift: float) -> np.ndarray:
        """``q`` distinct positions spread over ``0..n-1``."""
        q = min(q, n)
        return np.unique(((np.arange(q) + shift) * n / q).astype(np.int64).clip(0, n - 1))

    def _heatmap(self, data: _Gathered):
        rows, cols = self._first_captions(data, np.arange(min(self.num_images, data.num_images)))
        if len(rows) == 0:
            rank_zero_warn("EvaluationPlots: skipped similarity_heatmap: no test image has a caption")
            return None
        sim = data.image_emb[rows] @ data.text_emb[cols].T
        true = data.image_ids[rows][:, None] == data.text_image_ids[cols][None, :]
        return plots.similarity_heatmap(
            sim,
            [f"image {int(i)}" for i in data.image_ids[rows]],
            [data.captions[c] for c in cols],
            title=f"Cosine similarity of the first {len(rows)} test images and their first captions",
            true_mask=true,
            row_images=data.images[rows],
        )

    def _text_to_image(self, data: _Gathered):
        _, queries = self._first_captions(data, self._spread(data.num_images, self.num_queries, 0.0))
        if len(queries) == 0:
            rank_zero_warn("EvaluationPlots: skipped retrieval_text_to_image: no test image has a caption")
            return None
        sim = data.text_emb[queries] @ data.image_emb.T
        true = data.text_image_ids[queries][:, None] == data.image_ids[None, :]
        return plots.text_to_image_grid(
            [data.captions[q] for q in queries], data.images, sim, true, k=self.k, title="Text-to-image retrieval (test)"
        )

    def _image_to_text(self, data: _Gathered):
        queries = self._spread(data.num_images, self.num_queries, 0.5)
        if data.text_emb.shape[0] == 0:
            rank_zero_warn("EvaluationPlots: skipped retrieval_image_to_text: no test captions")
            return None
        sim = data.image_emb[queries] @ data.text_emb.T
        true = data.image_ids[queries][:, None] == data.text_image_ids[None, :]
        return plots.image_to_text_grid(
            data.images[queries], data.captions, sim, true, k=self.k, title="Image-to-text retrieval (test)",
            query_labels=[f"image {int(i)}" for i in data.image_ids[queries]],
        )

    def _projection(self, data: _Gathered, datamodule):
        if data.labels is None:
            rank_zero_warn("EvaluationPlots: skipped embedding_projection: the test batches have no class labels")
            return None
        label_names = list(getattr(datamodule, "label_names", None) or [])
        if self.label_kind not in label_names:
            rank_zero_warn(
                f"EvaluationPlots: skipped embedding_projection: label_kind={self.label_kind!r} is not one of the "
                f"datamodule's label_names {label_names}"
            )
            return None
        column = label_names.index(self.label_kind)
        if column >= data.labels.shape[1]:
            rank_zero_warn(f"EvaluationPlots: skipped embedding_projection: the labels have no column for {self.label_kind!r}")
            return None
        n = min(self.max_projection_points, data.num_images)
        labels = data.labels[:n, column]
        names = (getattr(datamodule, "class_names", None) or {}).get(self.label_kind)
        if not names:
            names = [str(c) for c in range(int(labels.max()) + 1)]
        return plots.embedding_projection(
            data.image_emb[:n], labels, list(names), title=f"Test image embeddings by {self.label_kind}", method=self.projection
        )

    # ------------------------------------------------------------------------------------------
    # Logging

    @staticmethod
    def _log(trainer: L.Trainer, name: str, path: Path) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        key = f"plots/{name}"
        for logger in trainer.loggers:
            try:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(key, _read_png_hwc(path), trainer.global_step, dataformats="HWC")
            except Exception as err:
                rank_zero_warn(f"EvaluationPlots: could not log {name} to {type(logger).__name__}: {type(err).__name__}: {err}")


def _read_png_hwc(path: Path) -> np.ndarray:
    """A PNG file -> uint8 ``[H, W, 3]``."""
    from matplotlib.image import imread

    img = imread(path)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])
