"""Classification metrics: accuracy, macro-F1, per-class precision/recall/F1 and confusion (scikit-learn), ECE
(torchmetrics), imported where they are computed so the classify-only runtime needs neither.

Shared by training, evaluation, export (INT8 drop) and benchmarks so every stage reports the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], bins: int = 10) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins (Guo et al. 2017), by torchmetrics.

    torchmetrics bins confidences as [lo, hi) in float32, with a confidence of exactly 1.0 in a bin of its own.
    """
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = np.asarray(probs)
    return float(
        multiclass_calibration_error(
            torch.as_tensor(probs, dtype=torch.float32),
            torch.as_tensor(np.asarray(y_true, dtype=np.int64)),
            num_classes=probs.shape[1],
            n_bins=bins,
            norm="l1",
        )
    )


def classification_report(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Everything we report about a labelled set, as plain JSON-able values (scikit-learn's scores).

    Macro-F1 averages over the classes present in `y_true`, so a fold without some class is not scored 0 on it.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    labels = np.arange(len(classes))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0.0
    )
    present = support > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": expected_calibration_error(probs, y_true) if len(y_true) else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }


def fold_spread(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (0 for a single value) of per-fold scores, and the scores."""
    data = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(data.mean()),
        "std": float(data.std(ddof=1)) if data.size > 1 else 0.0,
        "per_fold": data.tolist(),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
