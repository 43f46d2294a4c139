"""The library-backed metrics equal the hand-written numpy versions they replaced (kept here as references)."""

from __future__ import annotations

import numpy as np
import pytest

from sperm_edge.metrics import classification_report, expected_calibration_error, softmax


def reference_ece(probs: np.ndarray, y_true: np.ndarray, bins: int = 10) -> float:
    """The project's former ECE: equal-width (lo, hi] bins in float64."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def reference_scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple:
    """The project's former confusion matrix and per-class precision, recall and F1."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual > 0
    return matrix, precision, recall, f1, float(f1[present].mean())


def _random_set(rng: np.random.Generator, n: int, k: int, missing: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, k, n)
    if missing is not None:  # a class absent from the truth (a small fold), still predicted sometimes
        labels[labels == missing] = (missing + 1) % k
    logits = rng.normal(0, 2, (n, k)) + 2.5 * np.eye(k)[labels] * rng.random((n, 1))
    return softmax(logits), labels


@pytest.mark.parametrize("seed", range(20))
def test_report_equals_the_former_numpy_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    probs, labels = _random_set(rng, int(rng.integers(5, 300)), k, missing=0 if seed % 4 == 0 else None)
    classes = [f"c{i}" for i in range(k)]
    report = classification_report(labels, probs, classes)
    matrix, precision, recall, f1, macro = reference_scores(labels, probs.argmax(axis=1), k)
    assert report["confusion_matrix"] == matrix.tolist()
    assert report["macro_f1"] == pytest.approx(macro, abs=1e-12)
    for i, name in enumerate(classes):
        row = report["per_class"][name]
        expected = (precision[i], recall[i], f1[i])
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(expected, abs=1e-12)
        assert row["support"] == int((labels == i).sum())
    # float32 binning in torchmetrics against float64 here: equal unless a confidence sits on a bin edge
    assert report["ece"] == pytest.approx(reference_ece(probs, labels), abs=1e-6)


def test_ece_bins_differ_only_at_an_edge() -> None:
    """A confidence exactly on an edge is the one place the two binnings part: stated, not hidden."""
    probs = np.array([[0.72, 0.28], [0.76, 0.24], [0.17, 0.83]])
    labels = np.array([0, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(reference_ece(probs, labels), abs=1e-6)
    on_edge = np.array([[1.0, 0.0], [0.95, 0.05]])  # 1.0 gets a bin of its own in torchmetrics
    assert expected_calibration_error(on_edge, np.array([1, 0])) == pytest.approx(0.525)
    assert reference_ece(on_edge, np.array([1, 0])) == pytest.approx(0.475)
