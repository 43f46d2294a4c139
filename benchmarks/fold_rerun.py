"""A k-fold run set beside a row of the committed paper table: are they the same within noise?

Reads the test accuracy of every finished fold of RUN (`fold-*/metrics.json`, e.g. `sperm-edge train --folds 5`
or `--fold K` jobs) and the per-fold accuracies of the committed `paper_table.json` row of the same data set,
architecture and recipe, and writes both with their means, sample standard deviations and Welch's t-test
(the folds' test sets differ between splitters, so the folds are compared as two samples, not as pairs).

    python benchmarks/fold_rerun.py runs/hushem-lite0 --dataset hushem --arch cbam_efficientnet_lite0 \\
        --recipe 224-lr5e-4-mixup-ema-last --out benchmarks/results/paper/hushem_rerun

writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from sperm_edge.hardware import cpu_name
from sperm_edge.io import atomic_write_bytes, atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def finished_folds(run: Path) -> dict[int, dict]:
    """Test metrics of each fold of `run` whose training finished, by fold number."""
    folds = {int(d.name.split("-")[1]): d for d in run.glob("fold-*") if (d / "metrics.json").is_file()}
    return {k: json.loads((folds[k] / "metrics.json").read_text()) for k in sorted(folds)}


def committed_row(table: Path, dataset: str, arch: str, recipe: str) -> dict:
    for row in json.loads(table.read_text()):
        if (row["dataset"], row["arch"], row["precision"], row.get("recipe_name")) == (dataset, arch, "fp32", recipe):
            return row
    raise SystemExit(f"{table} has no fp32 row for {dataset} / {arch} / {recipe}")


def compare(rerun: list[float], committed: list[float]) -> dict:
    def spread(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}

    result = {"rerun": {**spread(rerun), "per_fold": rerun}, "committed": {**spread(committed), "per_fold": committed}}
    result["difference"] = result["rerun"]["mean"] - result["committed"]["mean"]
    if len(rerun) > 1 and len(committed) > 1:
        result["welch_p"] = float(stats.ttest_ind(rerun, committed, equal_var=False).pvalue)
    return result


def markdown(result: dict, args: argparse.Namespace) -> str:
    rerun, committed = result["rerun"], result["committed"]
    lines = [
        f"# {args.dataset} {args.arch}, recipe {args.recipe}: retrained folds beside the committed table",
        "",
        f"Written by `python benchmarks/fold_rerun.py {args.run} --dataset {args.dataset} --arch {args.arch} "
        f"--recipe {args.recipe} --out {args.out}`.",
        "",
        "| | folds | test accuracy per fold | mean | std |",
        "|---|---|---|---|---|",
    ]
    for name, row in (("retrained", rerun), ("committed", committed)):
        folds = ", ".join(f"{v:.3f}" for v in row["per_fold"])
        lines.append(f"| {name} | {len(row['per_fold'])} | {folds} | {row['mean']:.3f} | {row['std']:.3f} |")
    lines += ["", f"Difference of the means: {result['difference']:+.3f}."]
    if "welch_p" in result:
        lines.append(f"Welch's t-test: p = {result['welch_p']:.2f} (folds of the two splitters are different images).")
    lines += ["", f"Retrained on: {', '.join(sorted(set(result['devices'])))}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="k-fold run folder (fold-1/ ... fold-K/).")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--table", type=Path, default=RESULTS / "paper_table.json")
    parser.add_argument("--out", type=Path, required=True, help="Output stem: writes OUT.json and OUT.md.")
    args = parser.parse_args()
    folds = finished_folds(args.run)
    if not folds:
        raise SystemExit(f"{args.run} has no finished fold (fold-*/metrics.json)")
    row = committed_row(args.table, args.dataset, args.arch, args.recipe)
    result = compare([m["accuracy"] for m in folds.values()], row["accuracy_per_fold"])
    result |= {
        "folds": list(folds),
        "devices": [m.get("train_device", "") for m in folds.values()],
        "scored_on": cpu_name(),
        "dataset": args.dataset,
        "arch": args.arch,
        "recipe": args.recipe,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), result)
    atomic_write_bytes(args.out.with_suffix(".md"), markdown(result, args).encode())
    print(markdown(result, args))


if __name__ == "__main__":
    main()
