"""``ZeroShotClassification``: zero-shot top-1/top-5 accuracy on the test split's labels and on
any labelled image folders, logged as ``test/zeroshot_<task>_top1``."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from mmresearch.callbacks.rank_zero_evaluation import RankZeroEvaluation
from mmresearch.data.collate import TextEncoder
from mmresearch.data.image_folder import labelled_image_folder
from mmresearch.evaluation.features import extract_image_features
from mmresearch.evaluation.zero_shot import build_zero_shot_classifier, check_templates, zero_shot_accuracy
from mmresearch.utils.errors import ConfigError


class ZeroShotClassification(RankZeroEvaluation):
    """Zero-shot classification after testing.

    Args:
        label_kinds: label kinds of the data module to classify (its ``label_names``; None: all).
        templates: ``{kind: [template, ...]}`` overriding the data module's ``zero_shot_templates``.
        image_folders: extra labelled image folders, each ``{name, root, templates}`` (one
            sub-folder per class; the folder name, with ``_`` as a space, is the class name),
            read at the data module's image size and normalisation.
        top_k: accuracies to report.
    """

    def __init__(
        self,
        label_kinds: Optional[Sequence[str]] = None,
        templates: Optional[Mapping[str, Sequence[str]]] = None,
        image_folders: Optional[Sequence[Mapping]] = None,
        top_k: Sequence[int] = (1, 5),
    ) -> None:
        self.label_kinds = list(label_kinds) if label_kinds is not None else None
        self.templates = {k: check_templates(v, f"callbacks.zero_shot.templates.{k}") for k, v in (templates or {}).items()}
        self.image_folders = [dict(f) for f in (image_folders or [])]
        for i, folder in enumerate(self.image_folders):
            missing = {"name", "root", "templates"} - set(folder)
            if missing:
                raise ConfigError(f"callbacks.zero_shot.image_folders[{i}] needs keys {sorted(missing)}")
            check_templates(folder["templates"], f"callbacks.zero_shot.image_folders[{i}].templates")
        self.top_k = tuple(top_k)
        self.results: Dict[str, float] = {}

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, float]:
        dm = trainer.datamodule
        text_encoder = TextEncoder(dm.tokenizer, max_length=dm.max_text_length, padding="longest")
        autocast = self.autocast(trainer)

        def classify(class_names, templates, features, labels) -> Dict[str, float]:
            with autocast():
                classifier = build_zero_shot_classifier(pl_module.embed_texts, text_encoder, class_names, templates, pl_module.device)
            return zero_shot_accuracy(features, labels, classifier, self.top_k)

        out: Dict[str, float] = {}
        label_names = list(getattr(dm, "label_names", []) or [])
        kinds = self.label_kinds if self.label_kinds is not None else label_names
        unknown = [k for k in kinds if k not in label_names]
        if unknown:
            raise ConfigError(f"callbacks.zero_shot.label_kinds: {unknown} are not label kinds of the data ({label_names})")
        if kinds:
            features, labels = extract_image_features(pl_module.embed_images, dm.labelled_image_loader("test"), pl_module.device, autocast)
            if labels is None:
                rank_zero_warn("ZeroShotClassification: the test batches carry no labels; skipped")
            else:
                available = dm.zero_shot_templates
                for kind in kinds:
                    templates = self.templates.get(kind) or available.get(kind)
                    if not templates:
                        raise ConfigError(f"no zero-shot templates for label kind {kind!r}: set callbacks.zero_shot.templates.{kind}")
                    column = labels[:, label_names.index(kind)]
                    for key, value in classify(dm.class_names[kind], templates, features, column).items():
                        out[f"zeroshot_{kind}_{key}"] = value
        for folder in self.image_folders:
            dataset, loader = labelled_image_folder(folder["root"], dm.image_size, dm.mean, dm.std, dm.eval_batch_size)
            features, labels = extract_image_features(pl_module.embed_images, loader, pl_module.device, autocast)
            for key, value in classify(dataset.class_names, folder["templates"], features, labels).items():
                out[f"zeroshot_{folder['name']}_{key}"] = value
        self.results = out
        return out
