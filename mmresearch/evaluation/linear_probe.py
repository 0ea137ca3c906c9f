"""Linear probe on frozen image features: multinomial logistic regression with a validation sweep
over the inverse regularisation strength ``C`` (CLIP's linear-probe protocol).

The objective is scikit-learn's ``LogisticRegression(C=C)`` on standardised features,
``sum_i CE(x_i W + b, y_i) + ||W||^2 / (2 C)``, minimised with full-batch L-BFGS in torch: the same
accuracies as scikit-learn (checked in the tests) about 5x faster on the CPU, and it runs on the
GPU. Features are standardised with the training split's statistics; the best ``C`` on the
validation split is refit on train + validation and scored once on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class ProbeResult:
    """Accuracy of the probe on the test split, the chosen ``C`` and the validation accuracy per ``C``."""

    test_acc: float
    best_c: float
    val_acc: float
    val_curve: dict


class LogisticRegressionProbe:
    """Multinomial logistic regression with L2 penalty ``1 / (2 C)`` on standardised features.

    ``fit(x [N, E], y [N])`` then ``predict(x [M, E]) -> [M]`` / ``score(x, y) -> accuracy``.
    """

    def __init__(self, c: float = 1.0, max_iter: int = 200, num_classes: int | None = None) -> None:
        if c <= 0:
            raise ValueError(f"C must be > 0, got {c}")
        self.c, self.max_iter, self.num_classes = float(c), int(max_iter), num_classes

    def fit(self, x: Tensor, y: Tensor) -> "LogisticRegressionProbe":
        x, y = x.float().clone(), y.long().to(x.device).clone()  # clone: no inference-mode tensors
        self.mean, self.std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-12)  # as StandardScaler
        xs = (x - self.mean) / self.std
        k = self.num_classes or int(y.max()) + 1
        n = x.shape[0]
        self.weight = torch.zeros(x.shape[1], k, dtype=x.dtype, device=x.device, requires_grad=True)
        self.bias = torch.zeros(k, dtype=x.dtype, device=x.device, requires_grad=True)
        opt = torch.optim.LBFGS(
            [self.weight, self.bias], lr=1.0, max_iter=self.max_iter, history_size=20,
            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9,
        )

        def closure() -> Tensor:
            opt.zero_grad()
            # scikit-learn's objective divided by N (same optimum; tolerances independent of N)
            loss = F.cross_entropy(xs @ self.weight + self.bias, y) + 0.5 / (self.c * n) * self.weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self.weight, self.bias = self.weight.detach(), self.bias.detach()
        return self

    def predict(self, x: Tensor) -> Tensor:
        return (((x.float() - self.mean) / self.std) @ self.weight + self.bias).argmax(1)

    def score(self, x: Tensor, y: Tensor) -> float:
        return float((self.predict(x).cpu() == y.long().cpu()).double().mean())


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 200,
) -> ProbeResult:
    """Fit probes on ``[N, E]`` features with ``[N]`` labels; see the module doc."""
    if not cs:
        raise ValueError("linear_probe needs at least one value of C")
    if train_labels.unique().numel() < 2:
        raise ValueError("the probe's training labels hold a single class; use more training images")
    num_classes = int(max(t.max() for t in (train_labels, val_labels, test_labels))) + 1
    curve = {}
    for c in cs:
        probe = LogisticRegressionProbe(c, max_iter, num_classes).fit(train_features, train_labels)
        curve[float(c)] = probe.score(val_features, val_labels)
    best_c = max(curve, key=lambda c: (curve[c], -c))  # ties: the stronger regularisation
    final = LogisticRegressionProbe(best_c, max_iter, num_classes).fit(
        torch.cat([train_features, val_features]), torch.cat([train_labels, val_labels])
    )
    return ProbeResult(test_acc=final.score(test_features, test_labels), best_c=best_c, val_acc=curve[best_c], val_curve=curve)
