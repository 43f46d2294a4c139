"""Calibration of a k-fold run pooled over its test folds (#13's in-distribution ECE target).

A single test split of HuSHeM holds 32 images, too few for a 10-bin ECE. Every fold of a k-fold
run has its own temperature, fitted on that fold's validation split by the trainer; here each fold's
kept model scores its own test fold, and the ECE of the pooled test folds is reported before and
after temperature scaling (4-class top-1 confidence, and the normal-vs-abnormal probability), with
a reliability diagram.

    python benchmarks/calibration_folds.py RUN [RUN ...] --out benchmarks/results/calibration

writes calibration.json, calibration.md and one reliability PNG per run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from sperm_edge.calibration import calibrated_probs
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_bytes, atomic_write_json
from sperm_edge.metrics import expected_calibration_error, softmax
from sperm_edge.model.checkpoint import load_checkpoint
from sperm_edge.model.inference import predict_logits
from sperm_edge.train.evaluate import images_to_score
from sperm_edge.train.plots import plot_reliability

log = logging.getLogger("calibration_folds")


def fold_predictions(fold: Path) -> tuple[np.ndarray, np.ndarray, float, list[str], str]:
    """Test-fold logits, labels, temperature, class names and normal class of one fold's kept model."""
    ckpt = load_checkpoint(fold)
    dataset, _ = images_to_score(ckpt, None, "test")
    logits = predict_logits(ckpt.build_model(), dataset.images, ckpt.card.preprocess)
    return logits, np.asarray(dataset.labels), ckpt.card.temperature, ckpt.card.classes, ckpt.meta["normal_class"]


def binary_ece(probs: np.ndarray, labels: np.ndarray, normal: int) -> float:
    """ECE of the normal-vs-abnormal probability (what the report's % normal rests on); None without a normal class."""
    p_normal = probs[:, normal]
    binary = np.stack([1.0 - p_normal, p_normal], axis=1)
    return expected_calibration_error(binary, (labels == normal).astype(np.int64))


def run_row(run: Path, out: Path) -> dict:
    folds = sorted(run.glob("fold-*/best.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not folds:
        raise SpermEdgeError(f"{run} has no finished folds (fold-*/best.json)")
    raw, scaled, labels, per_fold = [], [], [], []
    for meta in folds:
        logits, y, temperature, classes, normal_name = fold_predictions(meta.parent)
        normal = classes.index(normal_name) if normal_name in classes else None
        before, after = softmax(logits), calibrated_probs(logits, temperature)
        per_fold.append(
            {
                "fold": meta.parent.name,
                "n": len(y),
                "temperature": temperature,
                "ece": expected_calibration_error(before, y),
                "ece_calibrated": expected_calibration_error(after, y),
            }
        )
        raw.append(before)
        scaled.append(after)
        labels.append(y)
        fold = per_fold[-1]
        log.info(
            "%s %s: T %.2f, ECE %.3f -> %.3f", run.name, fold["fold"], temperature, fold["ece"], fold["ece_calibrated"]
        )
    raw, scaled, labels = np.concatenate(raw), np.concatenate(scaled), np.concatenate(labels)
    row = {
        "run": run.name,
        "folds": len(folds),
        "n": len(labels),
        "ece": expected_calibration_error(raw, labels),
        "ece_calibrated": expected_calibration_error(scaled, labels),
        "binary_ece": None if normal is None else binary_ece(raw, labels, normal),
        "binary_ece_calibrated": None if normal is None else binary_ece(scaled, labels, normal),
        "ece_calibrated_fold_mean": float(np.mean([f["ece_calibrated"] for f in per_fold])),
        "per_fold": per_fold,
        "reliability_png": f"{run.name}.png",
    }
    curves = {
        f"softmax, ECE {row['ece']:.3f}": raw,
        f"each fold's T (fitted on its val), ECE {row['ece_calibrated']:.3f}": scaled,
    }
    plot_reliability(curves, labels, out / row["reliability_png"], f"{len(folds)} test folds, {len(labels)} images")
    return row


def _figure(value: float | None) -> str:
    return "no normal class" if value is None else f"{value:.3f}"


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Calibration pooled over test folds",
        "",
        f"Command: `{command}`",
        "",
        "Each fold's kept model on its own test fold, temperature fitted on that fold's validation split.",
        "",
        "| run | folds | n | ECE | ECE, T-scaled | normal-vs-abnormal ECE | T-scaled | per-fold T-scaled ECE (mean) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['folds']} | {r['n']} | {r['ece']:.3f} | {r['ece_calibrated']:.3f} "
            f"| {_figure(r['binary_ece'])} | {_figure(r['binary_ece_calibrated'])} "
            f"| {r['ece_calibrated_fold_mean']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="k-fold run folders (with fold-*/).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/calibration"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        rows = [run_row(run, args.out) for run in args.runs]
    except SpermEdgeError as err:
        sys.exit(f"error: {err}")
    command = "python benchmarks/calibration_folds.py " + " ".join(sys.argv[1:])
    atomic_write_json(args.out / "calibration.json", rows)
    atomic_write_bytes(args.out / "calibration.md", markdown(rows, command).encode())


if __name__ == "__main__":
    main()
