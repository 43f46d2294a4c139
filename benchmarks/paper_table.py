"""Reproduce the reference paper's table with 5-fold cross-validation on HuSHeM and SMIDS.

For every data set and architecture: stratified, duplicate-aware k-fold training (what
`sperm-edge train --folds K` runs). Where a data set lists several candidate recipes, the
architectures in SWEEP_ARCHS train with each, and each architecture keeps the recipe with the best
mean *validation* macro-F1 over its folds; test folds never choose anything. For the
architectures meant for deployment, every fold of the chosen recipe is then exported with INT8
(calibrated on the fold's training images, scored on its test fold beside the FP32 ONNX model).

Training jobs run in parallel worker processes (`--jobs`: on one GPU, three at a time with
`--train-workers 4` kept an H100 lease busy), INT8 exports in a second pool on the CPU. Everything is read
back from the run folders, so an interrupted run continues where it stopped, and `--budget`
stops the whole run in time with the table written from what finished (rows say how many folds).

    python benchmarks/paper_table.py --data-root ../shared/data --runs runs/paper

writes benchmarks/results/paper_table.json (one row per data set, architecture and precision),
paper_table.md and paper_machine.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import tarfile
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from sperm_edge.bench.machine import package_versions
from sperm_edge.bench.record import replace_section
from sperm_edge.hardware import cpu_name, gpus
from sperm_edge.io import atomic_write_bytes, atomic_write_json
from sperm_edge.metrics import fold_spread
from sperm_edge.model import get_entry
from sperm_edge.model.checkpoint import read_meta
from sperm_edge.train.run import summarize_folds

log = logging.getLogger("paper_table")

_LITE12 = ("cbam_efficientnet_lite1", "efficientnet_lite1", "cbam_efficientnet_lite2", "efficientnet_lite2")
# In order of priority (the default --archs); Lite1/Lite2 come last, the costliest to train on a CPU.
ARCHS = (
    "cbam_efficientnet_lite0",
    "efficientnet_lite0",
    "simple_cnn",
    "cbam_efficientnet_b0",
    "efficientnet_b0",
    *_LITE12,
)
SWEEP_ARCHS = ("cbam_efficientnet_lite0", "efficientnet_lite0")  # the others train with a data set's first recipe
INT8_ARCHS = ("cbam_efficientnet_lite0", "efficientnet_lite0", *_LITE12)
# Each CBAM architecture beside its no-CBAM twin, for the README's comparison.
CBAM_TWINS = tuple(
    (a, a.removeprefix("cbam_")) for a in ARCHS if a.startswith("cbam_") and a.removeprefix("cbam_") in ARCHS
)
# Candidate recipes (TrainConfig fields) per data set, in order of preference on a tie; each is its
# data set's base plus what the candidate changes.
_HUSHEM = dict(img_size=224, phase1_epochs=5, phase2_epochs=40, batch_size=16, phase1_lr=3e-3, label_smoothing=0.1)
_HUSHEM_EMA_LAST = {**_HUSHEM, "phase2_lr": 5e-4, "mixup": 0.2, "ema_decay": 0.98, "keep": "last", "patience": 100}
_SMIDS = dict(img_size=128, phase1_epochs=3, batch_size=64, phase1_lr=3e-3, label_smoothing=0.1)
RECIPES: dict[str, dict[str, dict]] = {
    "hushem": {
        "224-lr2e-4": {**_HUSHEM, "phase2_lr": 2e-4, "patience": 15},
        "224-lr5e-4-mixup": {**_HUSHEM, "phase2_lr": 5e-4, "mixup": 0.2, "patience": 15},
        # The weights kept are the final EMA, not the best epoch on a 26-33-image validation share.
        "224-lr5e-4-mixup-ema-last": _HUSHEM_EMA_LAST,
        # The same with the cross-lab issue's stain, optics and camera augmentation (`data.augment.ROBUST`);
        # measured, not adopted (results/paper_robust/).
        "224-lr5e-4-mixup-ema-last-robust": {**_HUSHEM_EMA_LAST, "augment": "robust"},
        # The same, distilled (`train.distill`) from the Lite1 version of the same architecture trained on the
        # same folds (CBAM-Lite0 from CBAM-Lite1, its twin from Lite1): (size, recipe) of the teacher run.
        "224-lr5e-4-mixup-ema-last-kd-lite1": {
            **_HUSHEM_EMA_LAST,
            "distill": 0.5,
            "teacher": ("lite1", "224-lr5e-4-mixup-ema-last"),
        },
    },
    "smids": {
        "128-lr3e-4": {**_SMIDS, "phase2_epochs": 12, "phase2_lr": 3e-4, "patience": 6},
        "128-lr6e-4-mixup": {**_SMIDS, "phase2_epochs": 18, "phase2_lr": 6e-4, "mixup": 0.2, "patience": 8},
        # HuSHeM's winning levers at SMIDS's length: the final EMA (0.99 a step: about 3 of the 12 epochs at
        # SMIDS's ~34 steps an epoch, as 0.98 is about 5 of 40 on HuSHeM) instead of the best epoch. Folds 1-3 ran
        # (results/paper/README.md) and scored below 128-lr3e-4 on validation, so it was not finished.
        "128-lr5e-4-mixup-ema-last": {
            **_SMIDS,
            "phase2_epochs": 12,
            "phase2_lr": 5e-4,
            "mixup": 0.2,
            "ema_decay": 0.99,
            "keep": "last",
            "patience": 100,
        },  # fmt: skip
    },
}
EXPORT_START_SHARE = 0.92  # of --budget: an export takes well under the last 8 %
PAPER = {"hushem": {"accuracy": 0.939, "macro_f1": 0.948}, "smids": {"accuracy": 0.902, "macro_f1": 0.913}}


# (data set, architecture) -> recipe fixed by --pick (a choice made on validation folds earlier).
PICKS: dict[tuple[str, str], str] = {}


def recipe_names(dataset: str, arch: str) -> list[str]:
    """The recipes `arch` trains with on `dataset`: the picked one, else the candidates (a distilled recipe,
    which needs its teacher's folds first, only when picked)."""
    if (dataset, arch) in PICKS:
        return [PICKS[dataset, arch]]
    names = [name for name, recipe in RECIPES[dataset].items() if "teacher" not in recipe]
    return names if arch in SWEEP_ARCHS else names[:1]


def run_dir(runs: Path, dataset: str, arch: str, recipe: str) -> Path:
    return runs / f"{dataset}-{arch}-{recipe}"


def teacher_run(runs: Path, dataset: str, arch: str, teacher: tuple[str, str]) -> Path:
    """The run a distilled recipe learns from: `teacher` = (size, recipe), e.g. ("lite1", ...) for a Lite0 arch."""
    size, recipe = teacher
    return run_dir(runs, dataset, arch.replace("lite0", size), recipe)


def finished_folds(run: Path) -> list[Path]:
    """Fold folders whose training finished (metrics.json written), in fold order."""
    done = [d for d in run.glob("fold-*") if (d / "metrics.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


# ---- worker jobs (top level: they run in spawned processes) ----


def _init_worker(threads: int) -> None:
    """Thread limits for a pool process; its DataLoader workers fork (a spawned one would re-pickle the images)."""
    import cv2
    import torch

    multiprocessing.set_start_method("fork", force=True)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def train_job(config: dict, folds: int) -> str:
    """k-fold training of one TrainConfig; resumes what an earlier run left in its folder."""
    from sperm_edge.train.config import TrainConfig
    from sperm_edge.train.run import train

    cfg = TrainConfig(**config)
    run = Path(cfg.out)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {run.name} %(message)s")
    resume = any(run.glob("fold-*/last.json")) or bool(finished_folds(run))  # finished: maybe from --archive
    if run.exists() and not resume:
        shutil.rmtree(run)  # started but died before its first epoch: nothing to keep
    started = time.perf_counter()
    train(cfg, folds=folds, resume=resume)
    return f"{run.name}: {folds} folds in {time.perf_counter() - started:.0f} s"


def int8_job(fold: str, out_json: str, bundle: str, keep_bundle: bool = False) -> str:
    """Export one fold with INT8; record the ONNX models' accuracy on its test fold and the gate's verdict on val."""
    from sperm_edge.export.pipeline import ExportOptions, export_bundle

    started = time.perf_counter()
    options = ExportOptions(int8=True, allow_drop=True, force=True, cpu_variant=False)  # default keep-float
    export_bundle(Path(fold), Path(bundle), options)
    models = json.loads((Path(bundle) / "manifest.json").read_text())["models"]
    int8 = models.get("int8")
    result = {
        "fp32": models["fp32"]["accuracy"],
        "int8": int8 and int8["accuracy"],
        "keep_float": int8 and int8["quantization"]["keep_float"],
        "gate": int8 and int8["gate"],  # decided on the fold's validation split
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not keep_bundle:
        shutil.rmtree(bundle)
    atomic_write_json(Path(out_json), result)
    return f"{out_json}: int8 {result['int8'] and result['int8']['accuracy']} fp32 {result['fp32']['accuracy']}"


# ---- reading the table back from the run folders ----


def best_val_f1(fold: Path) -> float:
    """Validation macro-F1 of the weights the fold kept.

    For a best-epoch run that is the best epoch's score, which the choice itself inflates; runs
    that keep their final weights are scored without that bias.
    """
    metrics = json.loads((fold / "metrics.json").read_text())
    if "kept" in metrics:
        return metrics["candidates"][metrics["kept"]]["val"]["macro_f1"]
    history = json.loads((fold / "history.json").read_text())
    return max(record["val_macro_f1"] for record in history)


def choose_recipe(runs: Path, dataset: str, arch: str, folds: int) -> tuple[str | None, dict]:
    """The recipe with all folds done and the best mean validation macro-F1 (else the most folds)."""
    selection = {}
    for name in recipe_names(dataset, arch):
        done = finished_folds(run_dir(runs, dataset, arch, name))
        if done:
            selection[name] = {"folds": len(done), "val_macro_f1_mean": float(np.mean([best_val_f1(f) for f in done]))}
    if not selection:
        return None, selection
    chosen = max(selection, key=lambda n: (min(selection[n]["folds"], folds), selection[n]["val_macro_f1_mean"]))
    return chosen, selection


def _pretrained_note(arch: str, b0_pretrained: bool) -> str:
    source = get_entry(arch).pretrained
    if source == "timm-hub":
        return "timm hub" if b0_pretrained else "none: timm hub unreachable offline (rerun with --b0-pretrained)"
    return source or "none (from scratch)"


def fp32_row(runs: Path, dataset: str, arch: str, recipe: str, selection: dict, b0_pretrained: bool) -> dict:
    done = finished_folds(run_dir(runs, dataset, arch, recipe))
    metrics = [json.loads((d / "metrics.json").read_text()) for d in done]
    summary = summarize_folds(metrics)
    return {
        "dataset": dataset,
        "arch": arch,
        "precision": "fp32",
        "folds": summary["folds"],
        "accuracy_mean": summary["accuracy"]["mean"],
        "accuracy_std": summary["accuracy"]["std"],
        "macro_f1_mean": summary["macro_f1"]["mean"],
        "macro_f1_std": summary["macro_f1"]["std"],
        "accuracy_per_fold": summary["accuracy"]["per_fold"],
        "tta": False,
        "per_class_f1": summary["per_class_f1"],
        "img_size": RECIPES[dataset][recipe]["img_size"],
        "seconds": round(sum(m.get("train_seconds", 0.0) for m in metrics), 1),
        "seconds_per_fold": [m.get("train_seconds") for m in metrics],
        "device_per_fold": [m.get("train_device", "unrecorded") for m in metrics],
        "pretrained": _pretrained_note(arch, b0_pretrained),
        "trained_on": dict(Counter(m.get("train_device", "unrecorded") for m in metrics)),
        "kept": metrics[0].get("kept", "raw-best"),
        "candidates": candidate_means(metrics),
        "recipe_name": recipe,
        "recipe_picked": (dataset, arch) in PICKS,  # fixed by --pick, not chosen among the candidates here
        "recipe": RECIPES[dataset][recipe],
        "recipe_selection": selection,
    }


def candidate_means(metrics: list[dict]) -> dict | None:
    """Mean accuracy over folds of every candidate a run scored (raw/EMA x best/last, plain and TTA).

    The levers are compared on the `val` columns; `test` is reported beside them, never chosen on.
    A best-epoch candidate's `val` is inflated by the choice itself; a last one's is not.
    """
    if any("candidates" not in m for m in metrics):
        return None
    names = metrics[0]["candidates"]
    return {
        name: {
            split: {
                "accuracy_mean": float(np.mean([m["candidates"][name][split]["accuracy"] for m in metrics])),
                "accuracy_per_fold": [m["candidates"][name][split]["accuracy"] for m in metrics],
            }
            for split in names[name]
        }
        for name in names
    }


def int8_row(runs: Path, dataset: str, arch: str, recipe: str) -> dict | None:
    paths = sorted(
        (runs / "int8").glob(f"{dataset}-{arch}-{recipe}-fold-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
    )  # fold order: fold-10 after fold-9
    records = [json.loads(p.read_text()) for p in paths]
    results = [r for r in records if r["int8"] is not None]
    if not results:
        return None
    accuracy = fold_spread([r["int8"]["accuracy"] for r in results])
    macro_f1 = fold_spread([r["int8"]["macro_f1"] for r in results])
    return {
        "dataset": dataset,
        "arch": arch,
        "precision": "int8",
        "folds": len(results),
        "accuracy_mean": accuracy["mean"],
        "accuracy_std": accuracy["std"],
        "macro_f1_mean": macro_f1["mean"],
        "macro_f1_std": macro_f1["std"],
        "accuracy_per_fold": accuracy["per_fold"],
        "fold_numbers": [int(p.stem.rsplit("-", 1)[1]) for p, r in zip(paths, records, strict=True) if r["int8"]],
        "tta": False,
        "per_class_f1": None,
        "img_size": RECIPES[dataset][recipe]["img_size"],
        "seconds": round(sum(r["seconds"] for r in results), 1),
        "onnx_fp32_accuracy_mean": fold_spread([r["fp32"]["accuracy"] for r in results])["mean"],
        "onnx_fp32_accuracy_per_fold": [r["fp32"]["accuracy"] for r in results],
        # the export gate's verdict on the fold's validation split (None: recorded before the gate moved there)
        "gate_passed_per_fold": [(r.get("gate") or {}).get("passed") for r in results],
        "agreement_with_fp32_mean": float(np.mean([r["int8"]["top1_agreement_fp32"] for r in results])),
        "keep_float": results[0]["keep_float"],
        "recipe_name": recipe,
    }


def table_rows(runs: Path, datasets: list[str], archs: list[str], folds: int, b0_pretrained: bool) -> list[dict]:
    rows = []
    for dataset in datasets:
        for arch in archs:
            recipe, selection = choose_recipe(runs, dataset, arch, folds)
            if recipe is None:
                continue
            rows.append(fp32_row(runs, dataset, arch, recipe, selection, b0_pretrained))
            int8 = int8_row(runs, dataset, arch, recipe)
            if int8 is not None:
                rows.append(int8)
    return rows


def _trained_on(row: dict) -> str:
    if row["precision"] != "fp32":
        return (
            f"INT8 of {row['folds']} of those folds (ONNX FP32 on them: {row['onnx_fp32_accuracy_mean']:.3f}, "
            f"top-1 agreement {row['agreement_with_fp32_mean']:.3f})"
        )
    return ", ".join(f"{device.split(': ', 1)[-1]} ×{n}" for device, n in row["trained_on"].items())


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Reference paper vs sperm-edge, 5-fold cross-validation",
        "",
        "Fold split seed 0, training seed 0. Accuracy and macro-F1: mean ± sample std over the test folds.",
        "Recipe: chosen per architecture by mean validation macro-F1, never by test folds, or fixed beforehand",
        "with --pick (marked *picked*): a recipe that keeps its final weights is not ranked against best-epoch",
        "recipes on validation, whose scores their own choice of epoch inflates. INT8: the ONNX",
        "Q/DQ model of each fold (calibrated on its training images) on its test fold, beside the FP32 ONNX model.",
        "",
        "| data set | architecture | precision | folds | accuracy | macro-F1 | input | recipe | trained on "
        "| ImageNet weights |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dataset, ref in PAPER.items():
        lines.append(
            f"| {dataset} | paper: EfficientNet-B0 + CBAM | fp32 | 1 split | {ref['accuracy']:.3f} "
            f"| {ref['macro_f1']:.3f} | 224 | - | - | ImageNet |"
        )
        for r in (r for r in rows if r["dataset"] == dataset):
            picked = " (picked)" if r.get("recipe_picked") else ""
            lines.append(
                f"| {dataset} | {r['arch']} | {r['precision']} | {r['folds']} "
                f"| {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} "
                f"| {r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f} "
                f"| {r['img_size']} | {r['recipe_name']}{picked} | {_trained_on(r)} "
                f"| {r.get('pretrained', 'as fp32')} |"
            )
    for r in rows:
        if r.get("candidates"):
            lines += _candidate_lines(r)
    return "\n".join(lines) + "\n"


def _candidate_lines(row: dict) -> list[str]:
    """The lever table of one row: each candidate's mean accuracy on validation and test folds."""
    first = next(iter(row["candidates"].values()))
    splits = [s for s in ("val", "val_tta", "test", "test_tta") if s in first]
    lines = [
        "",
        f"Levers of {row['dataset']} `{row['arch']}` ({row['recipe_name']}), mean accuracy over "
        f"{row['folds']} folds; kept: `{row['kept']}`. Chosen on `val` only (a best-epoch candidate's `val` "
        "is inflated by its own choice); `test` reported beside it.",
        "",
        "| candidate | " + " | ".join(splits) + " |",
        "| --- |" + " --- |" * len(splits),
    ]
    for name, scores in row["candidates"].items():
        lines.append(f"| {name} | " + " | ".join(f"{scores[s]['accuracy_mean']:.3f}" for s in splits) + " |")
    return lines


README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS = Path(__file__).resolve().parent / "results"
README_START, README_END = (
    "<!-- paper-table:start (written by benchmarks/paper_table.py) -->",
    "<!-- paper-table:end -->",
)
DATASET_NAMES = {"hushem": "HuSHeM", "smids": "SMIDS"}
README_NAMES = {
    "cbam_efficientnet_lite0": "`cbam_efficientnet_lite0`",
    "efficientnet_lite0": "`efficientnet_lite0` (no CBAM)",
    "simple_cnn": "`simple_cnn` (from scratch)",
    "cbam_efficientnet_b0": "`cbam_efficientnet_b0`",
    "efficientnet_b0": "`efficientnet_b0` (no CBAM)",
    "cbam_efficientnet_lite1": "`cbam_efficientnet_lite1`",
    "efficientnet_lite1": "`efficientnet_lite1` (no CBAM)",
    "cbam_efficientnet_lite2": "`cbam_efficientnet_lite2`",
    "efficientnet_lite2": "`efficientnet_lite2` (no CBAM)",
}


def readme_section(rows: list[dict]) -> str:
    """The README's results table, per-fold lines and CBAM comparison, rendered from paper_table.json's rows."""
    datasets = list(PAPER)
    header = " | ".join(f"{DATASET_NAMES[d]} {m}" for d in datasets for m in ("accuracy", "macro-F1"))
    lines = [f"| model | {header} |", "| --- |" + " --- |" * (2 * len(datasets))]
    paper = " | ".join(f"{PAPER[d][m]:.3f}" for d in datasets for m in ("accuracy", "macro_f1"))
    lines.append(f"| paper: EfficientNet-B0 + CBAM (one split) | {paper} |")
    by_key = {(r["dataset"], r["arch"], r["precision"]): r for r in rows}
    for arch in ARCHS:
        for precision in ("fp32", "int8"):
            cells = []
            for dataset in datasets:
                r = by_key.get((dataset, arch, precision))
                if r is None:
                    cells += ["not run", "not run"]
                    continue
                folds = "" if r["folds"] == 5 else f" ({r['folds']} of 5 folds)"
                cells.append(f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}{folds}")
                cells.append(f"{r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f}")
            if set(cells) != {"not run"}:
                name = README_NAMES[arch] + (", INT8" if precision == "int8" else "")
                lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", "Accuracy per test fold:", ""]
    for r in rows:
        numbers = r.get("fold_numbers") or range(1, len(r["accuracy_per_fold"]) + 1)
        folds = ", ".join(f"{n}: {a:.3f}" for n, a in zip(numbers, r["accuracy_per_fold"], strict=True))
        tta = "with" if r.get("tta") else "no"
        lines.append(
            f"- {DATASET_NAMES[r['dataset']]}, `{r['arch']}` {r['precision']} ({r['img_size']} px, {tta} TTA): {folds}"
        )
    for r in (r for r in rows if r["precision"] == "int8"):
        lines.append(f"- {DATASET_NAMES[r['dataset']]}, `{r['arch']}`: {_int8_drop(r)}")
    for cbam_arch, twin_arch in CBAM_TWINS:
        for dataset in datasets:
            cbam, twin = by_key.get((dataset, cbam_arch, "fp32")), by_key.get((dataset, twin_arch, "fp32"))
            if cbam and twin and cbam["folds"] == twin["folds"]:
                ahead = sum(a > b for a, b in zip(cbam["accuracy_per_fold"], twin["accuracy_per_fold"], strict=True))
                gain = 100 * (cbam["accuracy_mean"] - twin["accuracy_mean"])
                lines.append(
                    f"- `{cbam_arch}` against its no-CBAM twin on {DATASET_NAMES[dataset]}: {gain:+.1f} points, "
                    f"ahead on {ahead} of {cbam['folds']} folds"
                )
    return "\n".join(lines)


def _int8_drop(row: dict) -> str:
    """INT8 against the FP32 ONNX model of the same folds: mean and worst fold, and the validation gate's verdicts."""
    changes = [100 * (q - f) for f, q in zip(row["onnx_fp32_accuracy_per_fold"], row["accuracy_per_fold"], strict=True)]
    worst = int(np.argmin(changes))
    text = (
        f"INT8 against FP32 {np.mean(changes):+.1f} points on average, {changes[worst]:+.1f} on its worst fold "
        f"(fold {row['fold_numbers'][worst]})"
    )
    verdicts = [v for v in row["gate_passed_per_fold"] if v is not None]
    if verdicts:
        text += f"; the validation gate passed it on {sum(verdicts)} of {len(verdicts)} folds"
    return text


def update_readme(rows: list[dict], readme: Path = README) -> None:
    """Replace the README's generated results section (between its markers) with `rows` rendered anew."""
    replace_section(readme, README_START, README_END, readme_section(rows))


def write_table(args: argparse.Namespace) -> None:
    """paper_table.json, paper_table.md and the README's results section from the run folders under `args.runs`."""
    rows = table_rows(args.runs, args.datasets, args.archs, args.folds, args.b0_pretrained)
    atomic_write_json(args.out / "paper_table.json", rows)
    atomic_write_bytes(args.out / "paper_table.md", markdown(rows).encode())
    if args.out.resolve() == RESULTS.resolve():
        update_readme(rows)
    else:  # a trial table elsewhere must not rewrite the repository's README
        log.info("README left as it is: --out %s is not %s", args.out, RESULTS)


# ---- the scheduler ----


class Scheduler:
    """Training jobs in one pool, INT8 exports in another; the table is rewritten after each job."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        spawn = multiprocessing.get_context("spawn")  # CUDA cannot survive a fork
        self.train_pool = ProcessPoolExecutor(args.jobs, spawn, _init_worker, (args.train_threads,))
        self.export_pool = ProcessPoolExecutor(args.export_jobs, spawn, _init_worker, (args.export_threads,))
        self.pending: dict[Future, tuple] = {}
        self.exported: set[str] = set()  # fold exports already queued
        self.machine = {
            "cpu": cpu_name(),
            "threads": os.cpu_count(),
            "gpus": gpus(),
            "python": platform.python_version(),
            "packages": package_versions(),
            "data_root": str(args.data_root),
            "command": " ".join(sys.argv),
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> None:
        a = self.args
        for arch in a.archs:  # priority: the order of --archs, data sets interleaved
            for dataset in a.datasets:
                for recipe in recipe_names(dataset, arch):
                    config = dict(
                        data=str(a.data_root / dataset),
                        arch=arch,
                        out=str(run_dir(a.runs, dataset, arch, recipe)),
                        seed=a.seed,
                        pretrained=get_entry(arch).pretrained != "timm-hub" or a.b0_pretrained,
                        workers=a.train_workers,
                        **RECIPES[dataset][recipe],
                    )
                    if "teacher" in config:
                        config["teacher"] = str(teacher_run(a.runs, dataset, arch, config["teacher"]))
                    future = self.train_pool.submit(train_job, config, a.folds)
                    self.pending[future] = ("train", dataset, arch, recipe)
        self.queue_exports()
        while self.pending:
            left = a.budget - self.elapsed() if a.budget else None
            if left is not None and left <= 0:
                log.warning("budget of %.0f s spent: writing the table from what finished", a.budget)
                break
            done, _ = wait(self.pending, timeout=left, return_when=FIRST_COMPLETED)
            for future in done:
                key = self.pending.pop(future)
                try:
                    log.info("%.0f s: done %s", self.elapsed(), future.result())
                except Exception as err:  # one failed job must not lose the others' rows
                    log.error("%s failed: %s: %s", key, type(err).__name__, err)
            if a.budget and self.elapsed() > a.budget * a.start_share:
                self.cancel_unstarted("train")
            if a.budget and self.elapsed() > a.budget * EXPORT_START_SHARE:
                self.cancel_unstarted("int8")
            self.queue_exports()
            self.write()
        self.write()
        for child in multiprocessing.active_children():
            child.terminate()
        self.train_pool.shutdown(wait=False, cancel_futures=True)
        self.export_pool.shutdown(wait=False, cancel_futures=True)

    def cancel_unstarted(self, kind: str) -> None:
        for future, key in list(self.pending.items()):
            if key[0] == kind and future.cancel():
                log.warning("not started within the budget: %s", key)
                del self.pending[future]

    def queue_exports(self) -> None:
        """Export each finished fold of an INT8 architecture once its recipe is settled.

        With one candidate recipe that is at once; with several, after all of them have trained.
        """
        a = self.args
        if a.no_int8:
            return
        training = {(k[1], k[2]) for k in self.pending.values() if k[0] == "train"}
        for dataset in a.datasets:
            for arch in (x for x in a.archs if x in INT8_ARCHS):
                if (dataset, arch) in training and len(recipe_names(dataset, arch)) > 1:
                    continue
                recipe, _ = choose_recipe(a.runs, dataset, arch, a.folds)
                if recipe is None:
                    continue
                for fold in finished_folds(run_dir(a.runs, dataset, arch, recipe)):
                    name = f"{dataset}-{arch}-{recipe}-{fold.name}"
                    out_json = a.runs / "int8" / f"{name}.json"
                    if name in self.exported or out_json.is_file():
                        continue
                    self.exported.add(name)
                    bundle = a.runs / "bundles" / name
                    future = self.export_pool.submit(int8_job, str(fold), str(out_json), str(bundle), a.keep_bundles)
                    self.pending[future] = ("int8", dataset, arch, fold.name)

    def write(self) -> None:
        """The table, the machine this process trained on and, if asked, the folds' records."""
        a = self.args
        write_table(a)
        self.machine["seconds"] = round(self.elapsed(), 1)
        atomic_write_json(a.out / "paper_machine.json", self.machine)
        if a.archive:
            archive_results(a.runs, a.archive)


def archive_results(runs: Path, archive: Path) -> None:
    """The small JSON records of every fold (metrics, history, split, INT8 scores) in one tar.gz."""
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for path in sorted(runs.rglob("*.json")):
            if path.name in ("metrics.json", "history.json", "split.json", "cv.json") or path.parent.name == "int8":
                tar.add(path, arcname=str(path.relative_to(runs)))
    partial.replace(archive)


def merge_runs(sources: list[Path], runs: Path) -> list[Path]:
    """Copy the fold folders that jobs on other machines wrote (`sperm-edge train --fold K --out SRC/RUN`) into
    `runs`, run by run, so the table reads them as one k-fold run. A fold already there with the same test
    metrics is skipped; with other ones, or trained with another configuration than its run's other folds, the
    merge stops before copying anything."""
    plan: dict[Path, Path] = {}
    for source in sources:
        for fold in sorted(source.glob("*/fold-*")):
            if not (fold / "metrics.json").is_file():
                raise SystemExit(f"{fold} has not finished (no metrics.json): let its job end or --resume it first")
            target = runs / fold.parent.name / fold.name
            other = plan.get(target) or (target if target.is_dir() else None)
            if other is not None:
                if (other / "metrics.json").read_bytes() != (fold / "metrics.json").read_bytes():
                    raise SystemExit(f"{fold} and {other} are both {fold.parent.name}/{fold.name}, with other results")
                continue
            plan[target] = fold
    configs: dict[str, tuple[Path, dict]] = {}
    kept = [d for d in runs.glob("*/fold-*") if d not in plan and d.parent.name in {t.parent.name for t in plan}]
    for fold in [*plan.values(), *kept]:
        if not (fold / "best.json").is_file():  # an archived fold keeps its records, not its weights
            continue
        config = {k: v for k, v in read_meta(fold / "best.json")["config"].items() if k != "out"}
        first = configs.setdefault(fold.parent.name, (fold, config))
        if first[1] != config:
            raise SystemExit(f"{fold} was trained with another configuration than {first[0]}")
    for target, fold in plan.items():
        shutil.copytree(fold, target)
        log.info("merged %s into %s", fold, target)
    return sorted(plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs/paper"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--jobs", type=int, default=1, help="Training processes at once (a few can share one GPU).")
    parser.add_argument(
        "--train-threads", type=int, default=1, help="CPU threads of each training process (1 beside a GPU)."
    )
    parser.add_argument("--train-workers", type=int, default=0, help="DataLoader processes of each training job.")
    parser.add_argument("--export-jobs", type=int, default=1, help="INT8 export processes at once.")
    parser.add_argument("--export-threads", type=int, default=2, help="CPU threads of each export process.")
    parser.add_argument("--budget", type=float, default=0.0, help="Seconds: stop and write what finished (0: none).")
    parser.add_argument("--start-share", type=float, default=0.55, help="Share of --budget after which no job starts.")
    parser.add_argument("--archive", type=Path, help="Also write the folds' JSON records into this tar.gz.")
    parser.add_argument("--no-int8", action="store_true", help="Skip the INT8 rows.")
    parser.add_argument(
        "--keep-bundles", action="store_true", help="Keep each fold's exported bundle under RUNS/bundles (drift, ECE)."
    )
    parser.add_argument("--b0-pretrained", action="store_true", help="B0 from timm's hub (needs the internet).")
    parser.add_argument(
        "--pick", nargs="*", default=[], metavar="DATASET/ARCH=RECIPE", help="Train only this recipe for that pair."
    )
    parser.add_argument("--table-only", action="store_true", help="Rewrite the table from --runs; train nothing.")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=[],
        metavar="RUNS",
        help="First copy the fold folders other machines' `train --fold K` jobs wrote under these folders into --runs.",
    )
    parser.add_argument(
        "--readme-only", action="store_true", help="Rewrite the README's results section from --out's paper_table.json."
    )
    args = parser.parse_args()
    for item in args.pick:
        pair, _, recipe = item.partition("=")
        dataset, _, arch = pair.partition("/")
        if dataset not in RECIPES or arch not in ARCHS:
            parser.error(f"--pick {item!r}: expected DATASET/ARCH=RECIPE with a data set of {', '.join(RECIPES)}")
        if recipe not in RECIPES[dataset]:
            parser.error(f"--pick {item}: {dataset} has no recipe {recipe!r} ({', '.join(RECIPES[dataset])})")
        if "teacher" in RECIPES[dataset][recipe] and "lite0" not in arch:
            parser.error(f"--pick {item}: the distilled recipe {recipe!r} is for the Lite0 architectures")
        PICKS[dataset, arch] = recipe
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    merge_runs(args.merge, args.runs)
    if args.readme_only:
        update_readme(json.loads((args.out / "paper_table.json").read_text()))
    elif args.table_only:
        write_table(args)
        if args.archive:
            archive_results(args.runs, args.archive)
    else:
        Scheduler(args).run()


if __name__ == "__main__":
    main()
