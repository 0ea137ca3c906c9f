"""Linear probe: separable data is learned, the C sweep picks by validation accuracy."""

import pytest
import torch

from mmresearch.evaluation.linear_probe import LogisticRegressionProbe, linear_probe


def _blobs(n, seed, classes=4, dim=16, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, dim, generator=g), y


def test_separable_classes_are_learned():
    (xtr, ytr), (xva, yva), (xte, yte) = _blobs(300, 1), _blobs(100, 2), _blobs(200, 3)
    result = linear_probe(xtr, ytr, xva, yva, xte, yte, cs=(0.01, 1.0))
    assert result.test_acc > 0.95
    assert set(result.val_curve) == {0.01, 1.0}
    assert result.val_acc == result.val_curve[result.best_c] == max(result.val_curve.values())


def test_random_labels_stay_near_chance():
    (xtr, _), (xva, _), (xte, _) = _blobs(300, 1), _blobs(100, 2), _blobs(400, 3)
    g = torch.Generator().manual_seed(5)
    rand = lambda n: torch.randint(0, 4, (n,), generator=g)  # noqa: E731
    result = linear_probe(xtr, rand(300), xva, rand(100), xte, rand(400), cs=(0.1,))
    assert result.test_acc < 0.4


def test_single_class_is_an_error():
    x, _ = _blobs(20, 1)
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x, torch.zeros(20), x, torch.zeros(20), x, torch.zeros(20))


@pytest.mark.parametrize("c", [0.01, 1.0])
def test_same_solution_as_scikit_learn(c):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs(200, 4, spread=2.0)  # overlapping classes: a unique, finite optimum
    ours = LogisticRegressionProbe(c, max_iter=500).fit(x, y)
    xs = StandardScaler().fit_transform(x.double().numpy())
    ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(xs, y.numpy())
    assert (ours.predict(x).numpy() == ref.predict(xs)).mean() == 1.0
    # same decision function up to a constant per row (softmax is shift-invariant)
    logits = (((x.float() - ours.mean) / ours.std) @ ours.weight + ours.bias).double()
    diff = logits.numpy() - ref.decision_function(xs)
    assert abs(diff - diff.mean(1, keepdims=True)).max() < 5e-3  # float32 L-BFGS vs float64 scikit-learn
