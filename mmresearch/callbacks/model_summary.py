"""``PartsSummary``: the model summary at the start of fit, of the model's real parts only.

Lightning's default summary also lists the torchmetrics metrics a model holds as children (no
parameters, not part of the network), a column of FLOPs that is zero unless the model defines an
example input, and warns that it cannot size bf16-mixed weights. This one lists each
``nn.Module`` part to ``max_depth`` levels with its parameters (all and trainable: frozen towers
show), and the model's totals with the size of its parameters as stored (their own dtypes). It goes
to the log, so the run's log file has it too.
"""

from __future__ import annotations

import logging
from typing import List, Tuple

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from torch import nn
from torch.nn.parameter import UninitializedParameter
from torchmetrics import Metric

log = logging.getLogger(__name__)


def _counts(module: nn.Module) -> Tuple[int, int]:
    """(parameters, trainable parameters) of ``module``; lazy parameters count 0."""
    params = [p for p in module.parameters() if not isinstance(p, UninitializedParameter)]
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _count(n: int) -> str:
    """``1234 -> "1.2 K"`` (Lightning's format, without its padding)."""
    return get_human_readable_count(n).strip()


def summary_table(model: nn.Module, max_depth: int = 1) -> str:
    """A plain-text table of ``model``'s parts to ``max_depth`` levels (torchmetrics ``Metric``
    modules and what is inside them left out; a ``ModuleDict``/``ModuleList`` is not a level: the
    dual encoder's ``towers.image`` and ``objectives.image_text`` are parts of depth 1) and its totals."""
    rows: List[Tuple[str, str, str, str]] = []
    metrics: List[str] = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if not name or any(name.startswith(m + ".") for m in metrics):
            continue
        if isinstance(module, Metric):
            metrics.append(name)
            continue
        if isinstance(module, (nn.ModuleDict, nn.ModuleList)):
            continue  # a container (towers, objectives): its entries are listed at its level
        parts = name.split(".")
        containers = sum(isinstance(modules[".".join(parts[:i])], (nn.ModuleDict, nn.ModuleList)) for i in range(1, len(parts)))
        if len(parts) - containers <= max_depth:
            total, trainable = _counts(module)
            rows.append((name, type(module).__name__, _count(total), _count(trainable)))
    head = ("Name", "Type", "Params", "Trainable")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    line = lambda r: " | ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    rule = "-" * len(line(head))
    total, trainable = _counts(model)
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters() if not isinstance(p, UninitializedParameter)) / 1e6
    totals = [(_count(trainable), "trainable params"), (_count(total - trainable), "non-trainable params"),
              (_count(total), "total params"), (f"{size_mb:,.1f}", "MB of parameters")]
    return "\n".join([f"model: {type(model).__name__}", line(head), rule, *map(line, rows), rule, *(f"{a:>9}  {b}" for a, b in totals)])


class PartsSummary(ModelSummary):
    """Logs :func:`summary_table` at the start of fit on global rank zero.

    Args:
        max_depth: levels of nested modules listed (1: the model's direct parts; 0: no summary).
        enabled: false prints nothing (wired to ``trainer.enable_model_summary``; as a
            ``ModelSummary`` this callback also keeps Lightning's default one out).
    """

    def __init__(self, max_depth: int = 1, enabled: bool = True) -> None:
        super().__init__(max_depth=max_depth)
        self.enabled = bool(enabled)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and self._max_depth and trainer.is_global_zero:
            log.info("%s", summary_table(pl_module, self._max_depth))
