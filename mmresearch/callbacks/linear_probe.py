"""``LinearProbe``: logistic regression on frozen image features after testing, logged as
``test/probe_<kind>_acc`` (and the chosen ``C`` as ``test/probe_<kind>_C``)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import lightning as L

from mmresearch.callbacks.rank_zero_evaluation import RankZeroEvaluation
from mmresearch.evaluation.features import extract_image_features
from mmresearch.evaluation.linear_probe import DEFAULT_CS, linear_probe
from mmresearch.utils.errors import ConfigError


class LinearProbe(RankZeroEvaluation):
    """Linear probes of the image embeddings on the data module's labels.

    Features of the training split (its first ``max_train_images``), the validation split and the
    test split are extracted once; one probe per label kind is fit on them (see
    :func:`mmresearch.evaluation.linear_probe.linear_probe`).

    Args:
        label_kinds: label kinds to probe (None: all of the data module's ``label_names``).
        max_train_images: images of the training split used to fit (None: all).
        cs: the values of the inverse regularisation strength swept on the validation split.
        features: ``"embedding"`` (the projected, normalised embedding that retrieval uses).
    """

    def __init__(self, label_kinds: Optional[Sequence[str]] = None, max_train_images: Optional[int] = 5000, cs: Sequence[float] = DEFAULT_CS) -> None:
        self.label_kinds = list(label_kinds) if label_kinds is not None else None
        if max_train_images is not None and max_train_images < 2:
            raise ConfigError(f"callbacks.linear_probe.max_train_images must be >= 2 or null, got {max_train_images}")
        self.max_train_images = max_train_images
        self.cs = tuple(float(c) for c in cs)
        self.results: Dict[str, float] = {}
        self.curves: Dict[str, dict] = {}

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Dict[str, float]:
        dm = trainer.datamodule
        label_names = list(getattr(dm, "label_names", []) or [])
        kinds = self.label_kinds if self.label_kinds is not None else label_names
        unknown = [k for k in kinds if k not in label_names]
        if unknown:
            raise ConfigError(f"callbacks.linear_probe.label_kinds: {unknown} are not label kinds of the data ({label_names})")
        if not kinds:
            return {}
        autocast = self.autocast(trainer)
        splits = {}
        for split, limit in (("train", self.max_train_images), ("val", None), ("test", None)):
            splits[split] = extract_image_features(pl_module.embed_images, dm.labelled_image_loader(split, limit), pl_module.device, autocast)
        out: Dict[str, float] = {}
        for kind in kinds:
            col = label_names.index(kind)
            (xtr, ytr), (xva, yva), (xte, yte) = ((x, y[:, col]) for x, y in (splits["train"], splits["val"], splits["test"]))
            result = linear_probe(xtr, ytr, xva, yva, xte, yte, cs=self.cs)
            out[f"probe_{kind}_acc"] = result.test_acc
            out[f"probe_{kind}_C"] = result.best_c
            self.curves[kind] = result.val_curve
        self.results = out
        return out
