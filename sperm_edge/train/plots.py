"""PNG figures of a run: loss and metric curves per epoch, confusion matrix, reliability diagram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sperm_edge.io import atomic_path  # noqa: E402


def plot_curves(history: list[dict], path: str | Path) -> None:
    """Training loss and validation accuracy / macro-F1 against epoch, phase boundary marked."""
    if not history:
        return
    epochs = np.arange(1, len(history) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.plot(epochs, [r["val_accuracy"] for r in history], marker="o", label="val accuracy")
    right.plot(epochs, [r["val_macro_f1"] for r in history], marker="s", label="val macro-F1")
    right.set(xlabel="epoch", ylim=(0, 1.02), title="validation")
    right.legend(loc="lower right")
    switch = next((i for i, r in enumerate(history) if r["phase"] == 2), None)
    for axis in (left, right):
        if switch:
            axis.axvline(switch + 0.5, color="grey", linestyle="--", linewidth=1)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: str | Path) -> None:
    fig, axis = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    limit = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center", color="white" if value > limit else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_reliability(
    curves: dict[str, np.ndarray], labels: np.ndarray, path: str | Path, title: str, bins: int = 10
) -> None:
    """Reliability diagram: accuracy against confidence per equal-width bin, one line per set of probabilities.

    `curves` maps a legend label (e.g. "before, ECE 0.13") to N x K probabilities of the same images.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, axis = plt.subplots(figsize=(4.8, 4.6))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for (name, probs), marker in zip(curves.items(), "os^v", strict=False):
        confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
        filled = [b for b in range(bins) if (which == b).any()]
        axis.plot(
            [confidence[which == b].mean() for b in filled],
            [correct[which == b].mean() for b in filled],
            marker=marker,
            label=name,
        )
    axis.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
