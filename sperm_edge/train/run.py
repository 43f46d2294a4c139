"""Entry points of the train stage: one split or stratified k-fold, and evaluation of a checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from sperm_edge.data.folder import ImageFolder, load_image_folder
from sperm_edge.data.splits import kfold_splits, train_val_test_split
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_json
from sperm_edge.metrics import fold_spread
from sperm_edge.model.checkpoint import read_meta, resolve_checkpoint
from sperm_edge.train.config import TrainConfig
from sperm_edge.train.distill import teacher_path
from sperm_edge.train.distributed import World, barrier, check_agreement, process_group, world_from_env
from sperm_edge.train.trainer import Reporter, Trainer

log = logging.getLogger(__name__)


def train(
    cfg: TrainConfig,
    folds: int = 1,
    resume: bool = False,
    reporter: Reporter | None = None,
    fold: int | None = None,
    world: World | None = None,
) -> dict:
    """Train on `cfg.data` into `cfg.out`; with `folds` > 1, one run per fold plus `cv.json`, or with `fold` only
    that fold (a job of its own, on another machine say: its folder merges with the others' by copying).

    Under torchrun (`world`, from the environment by default) every process runs this; rank 0 writes the files
    and returns the metrics, the others return {}.
    """
    world = world or world_from_env()
    if fold is not None and not 1 <= fold <= folds:
        raise SpermEdgeError(f"--fold {fold} is not one of the folds 1..{folds} (--folds {folds})")
    out = Path(cfg.out)
    target = out / f"fold-{fold}" if fold is not None else out
    if resume:
        cfg = _saved_config(target, folds if fold is None else 1, cfg)
    elif target.exists() and any(target.iterdir()):
        raise SpermEdgeError(f"run folder {target} already exists; choose another --out or pass --resume")
    if cfg.teacher:  # every fold's teacher is there before the first fold trains
        wanted = [fold] if fold is not None else range(1, folds + 1) if folds > 1 else [None]
        for teacher_fold in wanted:
            resolve_checkpoint(teacher_path(cfg.teacher, teacher_fold))
    dataset = load_image_folder(cfg.data)
    log.info(
        "%s: %d images in %d classes %s (preset %s)",
        dataset.root,
        len(dataset),
        len(dataset.classes),
        dataset.classes,
        dataset.preset.name,
    )
    with process_group(world, world.device(cfg.device)):
        barrier(world)  # every rank has checked the folder before rank 0 writes to it
        if folds <= 1:
            split = train_val_test_split(
                dataset.labels, dataset.pixel_hashes, cfg.seed, cfg.val_fraction, cfg.test_fraction
            )
            return _fit(cfg, dataset, split, out, reporter, resume, None, world)
        splits = kfold_splits(dataset.labels, dataset.pixel_hashes, folds, cfg.seed, cfg.val_fraction)
        if fold is not None:
            fold_resume = resume and (target / "last.json").is_file()
            return _fit(cfg, dataset, splits[fold - 1], target, reporter, fold_resume, fold, world)
        results = []
        for number, split in enumerate(splits, start=1):
            fold_dir = out / f"fold-{number}"
            if (fold_dir / "metrics.json").is_file():
                _check_same_split(fold_dir, dataset, split)
                log.info("fold %d already done, reusing %s", number, fold_dir)
                results.append(json.loads((fold_dir / "metrics.json").read_text()))
                continue
            log.info(
                "fold %d of %d: %d train, %d val, %d test",
                number,
                folds,
                *(len(split[k]) for k in ("train", "val", "test")),
            )
            fold_resume = resume and (fold_dir / "last.json").is_file()
            results.append(_fit(cfg, dataset, split, fold_dir, reporter, fold_resume, number, world))
        if not world.main:
            return {}
        summary = summarize_folds(results)
        atomic_write_json(out / "cv.json", summary)
        return summary


def _fit(
    cfg: TrainConfig,
    dataset: ImageFolder,
    split: dict[str, list[int]],
    out: Path,
    reporter: Reporter | None,
    resume: bool,
    fold: int | None,
    world: World,
) -> dict:
    """One Trainer on one split, after every rank has proven it holds the same split of the same images."""
    check_agreement(
        world, f"the split of {cfg.data}", {k: [dataset.pixel_hashes[i] for i in v] for k, v in split.items()}
    )
    return Trainer(cfg, dataset, split, out, reporter, fold=fold, world=world).fit(resume=resume)


def _check_same_split(fold_dir: Path, dataset: ImageFolder, split: dict[str, list[int]]) -> None:
    """A finished fold is reused only if it tested on the images this version deals to that fold (folds dealt by
    an earlier splitter, or from other data, would overlap the new folds' test sets)."""
    recorded = fold_dir / "split.json"
    if not recorded.is_file():
        return
    paths = dataset.relative_paths()
    if sorted(json.loads(recorded.read_text()).get("test", [])) != sorted(paths[i] for i in split["test"]):
        raise SpermEdgeError(
            f"{fold_dir} tested on other images than this version's fold {fold_dir.name.split('-')[-1]} of "
            f"{dataset.root}: it was split by an earlier sperm-edge or from other data; train the folds anew"
        )


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
