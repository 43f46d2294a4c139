"""Accuracy of each variant on a labelled folder, and its agreement with the PyTorch FP32 reference.

A fast variant that predicts different classes is not a faster version of the model, so every
row carries accuracy, macro-F1, top-1 agreement with the reference (the share of images whose
predicted class is the reference's) and the largest logit difference. The images go through the
bundle's own preprocessing, once, and every variant sees the same array.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sperm_edge.bundle import Bundle
from sperm_edge.data.folder import load_image_folder
from sperm_edge.errors import SpermEdgeError
from sperm_edge.metrics import classification_report, softmax
from sperm_edge.preprocess import preprocess_batch

log = logging.getLogger(__name__)

SPLITS = ("all", "train", "val", "test")


@dataclass
class EvalSet:
    """Preprocessed labelled images (N x C x H x W float32) in the bundle's class order."""

    inputs: np.ndarray
    labels: np.ndarray
    classes: list[str]
    root: Path
    split: str


def _split_members(bundle: Bundle, split: str) -> set[str]:
    """Relative paths of `split` as the retained checkpoint recorded them at training time."""
    meta_name = bundle.manifest.get("checkpoint", {}).get("meta")
    if not meta_name:
        raise SpermEdgeError(f"bundle {bundle.path} retains no checkpoint metadata, so it knows no {split} split")
    meta = json.loads(bundle.file(meta_name).read_text())
    members = (meta.get("split") or {}).get(split)
    if not members:
        raise SpermEdgeError(f"checkpoint of bundle {bundle.path} records no {split} split (k-fold run?)")
    return set(members)


def load_eval_set(data: str | Path, bundle: Bundle, split: str = "all") -> EvalSet:
    """Decode and preprocess a class folder for `bundle`; `split` keeps only the images of that training split."""
    if split not in SPLITS:
        raise SpermEdgeError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
    folder = load_image_folder(data, classes=bundle.card.classes)
    indices = list(range(len(folder)))
    if split != "all":
        members = _split_members(bundle, split)
        rel = folder.relative_paths()
        indices = [i for i in indices if rel[i] in members]
        if not indices:
            raise SpermEdgeError(f"none of the {split} images recorded in the bundle's checkpoint is in {data}")
    folder = folder.subset(indices)
    inputs = preprocess_batch(folder.images, bundle.card.preprocess)
    log.info("accuracy set: %d images of %s (%s split)", len(folder), data, split)
    return EvalSet(inputs, np.asarray(folder.labels, dtype=np.int64), list(bundle.card.classes), Path(data), split)


def predict(runner: object, inputs: np.ndarray, batch: int = 32) -> np.ndarray:
    """Logits of `runner.infer` over `inputs` in batches of at most `batch` (last batch may be smaller)."""
    max_batch = getattr(getattr(runner, "input_spec", None), "max_batch", None)
    step = min(batch, max_batch) if max_batch else batch
    return np.concatenate([runner.infer(inputs[i : i + step]).logits for i in range(0, len(inputs), step)])


def score(logits: np.ndarray, eval_set: EvalSet, reference_logits: np.ndarray | None) -> dict:
    """accuracy, macro-F1, top-1 agreement and max |logit difference| with the reference, n images."""
    report = classification_report(eval_set.labels, softmax(logits), eval_set.classes)
    row = {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4), "n_images": report["n"]}
    if reference_logits is not None:
        agree = logits.argmax(axis=1) == reference_logits.argmax(axis=1)
        row["agreement"] = round(float(agree.mean()), 4)
        row["max_abs_diff"] = float(f"{np.abs(logits - reference_logits).max():.3g}")
    return row
