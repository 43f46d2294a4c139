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
from sperm_edge.metrics import fold_spread
from sperm_edge.model.checkpoint import read_meta, resolve_checkpoint
from sperm_edge.train.config import TrainConfig
from sperm_edge.train.distill import teacher_path
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
