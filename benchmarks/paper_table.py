"""Reproduce the reference paper's table with 5-fold cross-validation on HuSHeM and SMIDS.

For every data set and architecture: stratified, duplicate-aware k-fold training (`sperm-edge
train --folds K`), then, for the architectures meant for deployment, an INT8 bundle per fold
(`sperm-edge export --int8`, calibrated on the fold's training images, scored on its test fold).
Folds already finished are reused, so an interrupted run continues where it stopped.

    python benchmarks/paper_table.py --data-root ../shared/data --runs runs/paper

writes benchmarks/results/paper_table.json (one row per data set, architecture and precision)
and paper_table.md. Recipes below were chosen on validation folds only, never on test folds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from sperm_edge.bundle import cpu_name
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_bytes, atomic_write_json
from sperm_edge.model import get_entry
from sperm_edge.train.config import TrainConfig
from sperm_edge.train.run import train

log = logging.getLogger("paper_table")

ARCHS = ("cbam_efficientnet_lite0", "efficientnet_lite0", "simple_cnn", "cbam_efficientnet_b0", "efficientnet_b0")
INT8_ARCHS = ("cbam_efficientnet_lite0", "efficientnet_lite0", "cbam_efficientnet_b0")
# Per data set: the recipe (TrainConfig fields) chosen on validation folds.
RECIPES: dict[str, dict] = {
    "hushem": dict(img_size=128, phase1_epochs=5, phase2_epochs=20, batch_size=16, phase1_lr=3e-3, phase2_lr=1e-4),
    "smids": dict(img_size=96, phase1_epochs=2, phase2_epochs=6, batch_size=32, phase1_lr=3e-3, phase2_lr=1e-4),
}
PAPER = {"hushem": {"accuracy": 0.939, "macro_f1": 0.948}, "smids": {"accuracy": 0.902, "macro_f1": 0.913}}


def fold_dirs(run: Path) -> list[Path]:
    return sorted(run.glob("fold-*"), key=lambda p: int(p.name.split("-")[1]))


def fp32_row(dataset: str, arch: str, run: Path, summary: dict, recipe: dict) -> dict:
    folds = [json.loads((d / "metrics.json").read_text()) for d in fold_dirs(run)]
    return {
        "dataset": dataset,
        "arch": arch,
        "precision": "fp32",
        "folds": summary["folds"],
        "accuracy_mean": summary["accuracy"]["mean"],
        "accuracy_std": summary["accuracy"]["std"],
        "macro_f1_mean": summary["macro_f1"]["mean"],
        "macro_f1_std": summary["macro_f1"]["std"],
        "per_class_f1": summary["per_class_f1"],
        "img_size": recipe["img_size"],
        "seconds": round(sum(f.get("train_seconds", 0.0) for f in folds), 1),
        "pretrained": _pretrained_note(arch),
        "recipe": recipe,
    }


def _pretrained_note(arch: str) -> str:
    source = get_entry(arch).pretrained
    if source == "timm-hub":
        return "none: timm hub unreachable offline (rerun with --b0-pretrained where it is reachable)"
    return source or "none (from scratch)"


def int8_row(dataset: str, arch: str, run: Path, recipe: dict, bundles: Path) -> dict:
    """Export each fold with --int8 (calibrated on its train split, scored on its test fold)."""
    from sperm_edge.export.pipeline import ExportOptions, export_bundle

    results, seconds = [], 0.0
    for fold in fold_dirs(run):
        out = bundles / f"{dataset}-{arch}-{fold.name}"
        started = time.perf_counter()
        export_bundle(fold, out, ExportOptions(int8=True, allow_drop=True, force=True))
        seconds += time.perf_counter() - started
        manifest = json.loads((out / "manifest.json").read_text())
        results.append(manifest["models"]["int8"]["accuracy"])
        shutil.rmtree(out)
    accuracy = np.array([r["accuracy"] for r in results])
    macro_f1 = np.array([r["macro_f1"] for r in results])
    return {
        "dataset": dataset,
        "arch": arch,
        "precision": "int8",
        "folds": len(results),
        "accuracy_mean": float(accuracy.mean()),
        "accuracy_std": float(accuracy.std(ddof=1)),
        "macro_f1_mean": float(macro_f1.mean()),
        "macro_f1_std": float(macro_f1.std(ddof=1)),
        "per_class_f1": None,
        "img_size": recipe["img_size"],
        "seconds": round(seconds, 1),
        "agreement_with_fp32_mean": float(np.mean([r.get("top1_agreement_fp32", np.nan) for r in results])),
    }


def markdown(rows: list[dict], machine: dict) -> str:
    lines = [
        "# Reference paper vs sperm-edge, 5-fold cross-validation",
        "",
        f"Machine: {machine['cpu']}, {machine['threads']} threads, no GPU. Seeds: fold split seed 0, training seed 0.",
        "",
        "| data set | architecture | precision | accuracy | macro-F1 | input | train+eval s | ImageNet weights |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dataset, ref in PAPER.items():
        lines.append(
            f"| {dataset} | paper: EfficientNet-B0 + CBAM | fp32 | {ref['accuracy']:.3f} (single split) "
            f"| {ref['macro_f1']:.3f} | 224 | - | ImageNet |"
        )
        for r in (r for r in rows if r["dataset"] == dataset):
            lines.append(
                f"| {dataset} | {r['arch']} | {r['precision']} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} "
                f"| {r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f} | {r['img_size']} | {r['seconds']:.0f} "
                f"| {r.get('pretrained', 'as fp32')} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--datasets", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs/paper"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--no-int8", action="store_true", help="Skip the INT8 rows.")
    parser.add_argument("--b0-pretrained", action="store_true", help="B0 from timm's hub (needs the internet).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    table_path = args.out / "paper_table.json"
    rows = json.loads(table_path.read_text()) if table_path.is_file() else []
    machine = {"cpu": cpu_name(), "threads": os.cpu_count(), "python": platform.python_version()}
    for dataset in args.datasets:
        recipe = RECIPES[dataset]
        for arch in args.archs:
            run = args.runs / f"{dataset}-{arch}"
            pretrained = get_entry(arch).pretrained != "timm-hub" or args.b0_pretrained
            cfg = TrainConfig(
                data=str(args.data_root / dataset),
                arch=arch,
                out=str(run),
                seed=args.seed,
                pretrained=pretrained,
                **recipe,
            )
            log.info("%s %s: %d-fold into %s", dataset, arch, args.folds, run)
            try:
                summary = train(cfg, folds=args.folds, resume=run.exists())
            except SpermEdgeError as err:
                log.error("%s %s failed: %s", dataset, arch, err)
                continue
            new = [fp32_row(dataset, arch, run, summary, recipe)]
            if arch in INT8_ARCHS and not args.no_int8:
                new.append(int8_row(dataset, arch, run, recipe, args.runs / "bundles"))
            keys = {(r["dataset"], r["arch"], r["precision"]) for r in new}
            rows = [r for r in rows if (r["dataset"], r["arch"], r["precision"]) not in keys] + new
            atomic_write_json(table_path, rows)
            atomic_write_bytes(args.out / "paper_table.md", markdown(rows, machine).encode())
    atomic_write_json(args.out / "paper_machine.json", machine)


if __name__ == "__main__":
    main()
