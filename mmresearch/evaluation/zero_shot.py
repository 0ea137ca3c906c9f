"""Zero-shot classification from class names and prompt templates (CLIP, Radford et al., 2021).

A class's text embedding is the mean of the normalised embeddings of ``template.format(name)``
over all templates, renormalised (prompt ensembling in embedding space). Images are classified by
cosine similarity to the class embeddings; accuracy comes from torchmetrics.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from mmresearch.utils.errors import ConfigError


def check_templates(templates: Sequence[str], key: str = "templates") -> list[str]:
    """Templates must be a non-empty list of strings with one ``{}`` placeholder each."""
    if isinstance(templates, str) or not templates:
        raise ConfigError(f"{key} must be a non-empty list of strings with a '{{}}' for the class name, got {templates!r}")
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad:
        raise ConfigError(f"{key}: every template needs exactly one '{{}}' for the class name; these do not: {bad}")
    return list(templates)


@torch.no_grad()
def build_zero_shot_classifier(
    embed_texts: Callable[[Tensor, Tensor], Tensor],
    tokenize: Callable[[list[str]], tuple[Tensor, Tensor]],
    class_names: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
) -> Tensor:
    """Class embeddings ``[C, E]`` (rows L2-normalised) from ``C`` names and ``P`` templates.

    Args:
        embed_texts: ``(input_ids [T, L], attention_mask [T, L]) -> [T, E]``.
        tokenize: ``list of T texts -> (input_ids [T, L], attention_mask [T, L])``.
    """
    templates = check_templates(templates)
    if not class_names:
        raise ConfigError("zero-shot classification needs at least one class name")
    texts = [t.format(name) for name in class_names for t in templates]  # class-major
    ids, mask = tokenize(texts)
    emb = F.normalize(embed_texts(ids.to(device), mask.to(device)).float(), dim=-1)
    emb = emb.view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def zero_shot_accuracy(image_features: Tensor, labels: Tensor, classifier: Tensor, top_k: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Top-k accuracy (micro average) of nearest-class-embedding classification.

    Args:
        image_features: ``[N, E]`` image embeddings.
        labels: ``[N]`` class indices.
        classifier: ``[C, E]`` from :func:`build_zero_shot_classifier`.
        top_k: the k values; a k >= C (always right) is left out.

    Returns:
        ``{"top1": ..., "top5": ...}``.
    """
    num_classes = classifier.shape[0]
    logits = F.normalize(image_features.float(), dim=-1) @ classifier.float().T  # [N, C]
    out = {}
    for k in top_k:
        if k >= num_classes and k != 1:
            continue
        metric = MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro")
        out[f"top{k}"] = float(metric(logits, labels.long()))
    return out
