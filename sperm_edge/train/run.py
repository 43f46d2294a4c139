"""Entry points of the train stage: one split or stratified k-fold, and evaluation of a checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from sperm_edge.data.folder import load_image_folder
from sperm_edge.data.splits import kfold_splits, train_val_test_split
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_json
from sperm_edge.metrics import classification_report, fold_spread
from sperm_edge.model.checkpoint import load_checkpoint, read_meta, resolve_checkpoint
from sperm_edge.model.inference import pick_device, predict_probs
from sperm_edge.train.config import TrainConfig
from sperm_edge.train.distill import teacher_path
from sperm_edge.train.plots import plot_confusion
from sperm_edge.train.trainer import Reporter, Trainer

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, folds: int = 1, resume: bool = False, reporter: Reporter | None = None) -> dict:
    """Train on `cfg.data` into `cfg.out`; with `folds` > 1, one run per fold plus `cv.json`."""
    out = Path(cfg.out)
    if resume:
        cfg = _saved_config(out, folds, cfg)
    elif out.exists() and any(out.iterdir()):
        raise SpermEdgeError(f"run folder {out} already exists; choose another --out or pass --resume")
    if cfg.teacher:  # every fold's teacher is there before the first fold trains
        for fold in range(1, folds + 1) if folds > 1 else (None,):
            resolve_checkpoint(teacher_path(cfg.teacher, fold))
    dataset = load_image_folder(cfg.data)
    log.info(
        "%s: %d images in %d classes %s (preset %s)",
        dataset.root,
        len(dataset),
        len(dataset.classes),
        dataset.classes,
        dataset.preset.name,
    )
    if folds <= 1:
        split = train_val_test_split(
            dataset.labels, dataset.pixel_hashes, cfg.seed, cfg.val_fraction, cfg.test_fraction
        )
        return Trainer(cfg, dataset, split, out, reporter).fit(resume=resume)
    results = []
    for fold, split in enumerate(
        kfold_splits(dataset.labels, dataset.pixel_hashes, folds, cfg.seed, cfg.val_fraction), start=1
    ):
        fold_dir = out / f"fold-{fold}"
        if (fold_dir / "metrics.json").is_file():
            log.info("fold %d already done, reusing %s", fold, fold_dir)
            results.append(json.loads((fold_dir / "metrics.json").read_text()))
            continue
        log.info(
            "fold %d of %d: %d train, %d val, %d test", fold, folds, *(len(split[k]) for k in ("train", "val", "test"))
        )
        fold_resume = resume and (fold_dir / "last.json").is_file()
        results.append(Trainer(cfg, dataset, split, fold_dir, reporter, fold=fold).fit(resume=fold_resume))
    summary = summarize_folds(results)
    atomic_write_json(out / "cv.json", summary)
    return summary


def summarize_folds(results: list[dict]) -> dict:
    """Mean and sample std of accuracy and macro-F1 over folds, and per-class F1 means."""
    summary: dict = {"folds": len(results)}
    for key in ("accuracy", "macro_f1"):
        summary[key] = fold_spread([r[key] for r in results])
    classes = results[0]["classes"]
    summary["per_class_f1"] = {c: float(np.mean([r["per_class"][c]["f1"] for r in results])) for c in classes}
    return summary


def _saved_config(out: Path, folds: int, given: TrainConfig) -> TrainConfig:
    """The configuration a resumed run continues with: the one it saved, else `given` for k-fold folders that
    hold only finished folds' records (restored from an archive, weights and last.json not kept)."""
    candidates = [out / "last.json", *sorted(out.glob("fold-*/last.json"))] if folds > 1 else [out / "last.json"]
    for path in candidates:
        if path.is_file():
            return TrainConfig.from_dict(read_meta(path)["config"])
    if folds > 1 and any(out.glob("fold-*/metrics.json")):
        log.warning("%s holds finished folds but no saved configuration: the other folds train as given", out)
        return given
    raise SpermEdgeError(f"nothing to resume in {out}: no last.json (was the run started there?)")


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
    probs = predict_probs(model, dataset.images, ckpt.preprocess)
    report = classification_report(dataset.labels, probs, ckpt.classes)
    report["scored"] = {"data": str(root), "split": split, "n": len(dataset), "seen_in_training": seen}
    report["skipped"] = dataset.skipped
    if out_json is not None:
        atomic_write_json(out_json, report)
        plot_confusion(np.array(report["confusion_matrix"]), ckpt.classes, Path(out_json).with_suffix(".png"))
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
    dataset = load_image_folder(root, classes=ckpt.classes, min_classes=1)
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
