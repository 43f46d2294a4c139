"""A trained run scored on labelled images: its own test (or val, train) split, or every image of another set.

Its own module, below the trainer and the calibration that both use it: `sperm-edge evaluate` and
`sperm-edge calibrate` score a checkpoint without importing the trainer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sperm_edge.data.folder import load_image_folder
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_json
from sperm_edge.metrics import classification_report
from sperm_edge.model.checkpoint import load_checkpoint
from sperm_edge.model.inference import pick_device, predict_probs
from sperm_edge.train.plots import plot_confusion

log = logging.getLogger(__name__)

EVAL_SPLITS = ("test", "val", "train", "all")


def evaluate(
    checkpoint: str | Path,
    data: str | Path | None = None,
    out_json: str | Path | None = None,
    device: str = "auto",
    split: str = "test",
) -> dict:
    """Metrics of a checkpoint on labelled images; also writes a confusion PNG beside `out_json`.

    By default the run's own test split (`split.json`), so a figure is never silently inflated by
    images the model trained on. `split="all"` scores every image of `data` (another lab's set, say)
    and warns when some of them were in the run's train or val split (matched by pixel content).
    """
    ckpt = load_checkpoint(checkpoint)
    dataset, root = images_to_score(ckpt, data, split)
    record = ckpt.meta.get("split") or {}
    seen = _seen_in_training(dataset, record, root)
    if seen:
        log.warning(
            "%d of the %d images scored were in the run's train or val split: these figures are inflated",
            seen,
            len(dataset),
        )
    model = ckpt.build_model().to(pick_device(device))
    probs = predict_probs(model, dataset.images, ckpt.card.preprocess)
    report = classification_report(dataset.labels, probs, ckpt.card.classes)
    report["scored"] = {"data": str(root), "split": split, "n": len(dataset), "seen_in_training": seen}
    report["skipped"] = dataset.skipped
    if out_json is not None:
        atomic_write_json(out_json, report)
        plot_confusion(np.array(report["confusion_matrix"]), ckpt.card.classes, Path(out_json).with_suffix(".png"))
    return report


def images_to_score(ckpt, data: str | Path | None, split: str):
    """The images to score: `split` of the run's own data, or (`all`) every image of `data`; and their root."""
    if split not in EVAL_SPLITS:
        raise SpermEdgeError(f"--split must be one of {', '.join(EVAL_SPLITS)}, not {split!r}")
    record = ckpt.meta.get("split") or {}
    own_root = Path(record["data"]) if record.get("data") else None
    root = Path(data) if data is not None else own_root
    if root is None:
        raise SpermEdgeError("the checkpoint records no split; pass --data DIR --split all")
    dataset = load_image_folder(root, classes=ckpt.card.classes, min_classes=1)
    if split == "all":
        return dataset, root
    if own_root is None or root.resolve() != own_root.resolve() or not record.get(split):
        raise SpermEdgeError(
            f"--split {split} scores the run's own {split} split of {own_root}; "
            f"to score every image of {root}, pass --split all"
        )
    wanted = set(record[split])
    return dataset.subset([i for i, p in enumerate(dataset.relative_paths()) if p in wanted]), root


def _seen_in_training(dataset, record: dict, root: Path) -> int:
    """How many of `dataset`'s images the run trained or selected on (its train + val split)."""
    fitted = set(record.get("train", [])) | set(record.get("val", []))
    own_root = Path(record["data"]) if record.get("data") else None
    if not fitted or own_root is None:
        return 0
    if root.resolve() == own_root.resolve():
        return sum(p in fitted for p in dataset.relative_paths())
    if not own_root.is_dir():
        log.warning("cannot check for training images: the run's data %s is not here", own_root)
        return 0
    train_data = load_image_folder(own_root, min_classes=1)
    hashes = {h for p, h in zip(train_data.relative_paths(), train_data.pixel_hashes, strict=True) if p in fitted}
    return sum(h in hashes for h in dataset.pixel_hashes)
