"""INT8 that ships: the export's accuracy-aware search on every fold of the paper table's runs.

Each fold is exported exactly as the README does it (`sperm-edge export RUN --out BUNDLE --int8`, every
default), into a cache that makes the script resumable fold by fold. For each INT8 model (`int8`, the
Q/DQ model TensorRT takes, and `int8_cpu`) the rows hold FP32 and INT8 accuracy on validation (what the
search decided on) and test (reported only), what was kept in float, the candidates tried, and, with
`--time`, batch-1 ONNX Runtime CPU latency of FP32, the shipped INT8 model and the search's first
candidate (the fully quantized model for Lite0), measured one after another in one quiet run.

    python benchmarks/int8_search.py --runs RUNS... --cache DIR            # export (resumable)
    python benchmarks/int8_search.py --runs RUNS... --cache DIR --time     # then time, nothing else running

RUNS are folders of `fold-K` runs (`sperm-edge train --folds 5 --fold K`). Writes
benchmarks/results/int8_search.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from sperm_edge.bench.machine import load_average
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.images import split_images
from sperm_edge.export.int8 import Int8Config, prepare_for_quantization, quantize_int8
from sperm_edge.export.ort_cpu import measure_latency
from sperm_edge.export.pipeline import ExportOptions, export_bundle
from sperm_edge.hardware import cpu_name
from sperm_edge.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger("int8_search")
VARIANTS = ("int8", "int8_cpu")
LATENCY_RUNS = 100


def _folds(runs: list[Path]) -> list[Path]:
    folds = sorted(p for run in runs for p in run.glob("fold-*") if (p / "metrics.json").is_file())
    if not folds:
        raise SpermEdgeError(f"no finished fold-K runs under {', '.join(map(str, runs))}")
    return folds


def _slot(cache: Path, fold: Path) -> Path:
    return cache / fold.parent.name / fold.name


def export_fold(fold: Path, slot: Path) -> None:
    """The README's export of one fold, then the search's first candidate of each variant beside it."""
    from sperm_edge.model.checkpoint import load_checkpoint

    bundle = slot / "bundle"
    if not (bundle / "manifest.json").is_file():
        log.info("exporting %s", fold)
        export_bundle(fold, bundle, ExportOptions(int8=True, force=True))
    manifest = json.loads((bundle / "manifest.json").read_text())
    entries = _entries(manifest)
    missing = [v for v, e in entries.items() if e["search"]["chosen"] != 1 and not (slot / f"first.{v}.onnx").is_file()]
    if not missing:
        return
    ckpt = load_checkpoint(fold)
    options = ExportOptions()
    calib = split_images(ckpt.meta, "train", ckpt.card.classes).sample(options.calib_count, options.seed)
    with tempfile.TemporaryDirectory() as work:
        prepared = prepare_for_quantization(bundle / "model.onnx", Path(work) / "model.pre.onnx")
        for variant in missing:
            first = entries[variant]["search"]["candidates"][0]
            config = Int8Config(
                method=first["calibration"], keep_float=tuple(first["keep_float"]), per_channel=first["per_channel"]
            )
            out = Path(work) / f"first.{variant}.onnx"
            quantize_int8(prepared, out, calib.images, ckpt.card.preprocess, variant, config)
            atomic_write_bytes(slot / out.name, out.read_bytes())


def _entries(manifest: dict) -> dict[str, dict]:
    """Each INT8 variant's manifest entry, shipped or rejected (a rejected one keeps its gate and search)."""
    entries = {v: e for v, e in manifest["models"].items() if v in VARIANTS}
    for item in manifest.get("rejected", []):
        entries.setdefault(item["precision"], {**item, "shipped": False})
    return entries


def time_fold(slot: Path) -> None:
    """Batch-1 latency of FP32, each shipped INT8 model and each search's first candidate."""
    bundle = slot / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    size = manifest["preprocess"]["img_size"]
    files = {"fp32": bundle / "model.onnx"}
    for variant, entry in manifest["models"].items():
        if variant in VARIANTS:
            files[variant] = bundle / entry["file"]
            first = slot / f"first.{variant}.onnx"
            files[f"first.{variant}"] = first if first.is_file() else files[variant]
    timing = {
        name: measure_latency(path, name.removeprefix("first."), size, runs=LATENCY_RUNS).p50_ms
        for name, path in files.items()
    }
    atomic_write_json(slot / "latency.json", {**timing, "cpu": cpu_name(), "loadavg": load_average()})


def fold_rows(fold: Path, slot: Path) -> list[dict]:
    manifest = json.loads((slot / "bundle" / "manifest.json").read_text())
    timing = json.loads((slot / "latency.json").read_text()) if (slot / "latency.json").is_file() else {}
    fp32 = manifest["models"]["fp32"]["accuracy"]
    rows = []
    for variant, entry in _entries(manifest).items():
        search, gate = entry["search"], entry["gate"]
        chosen = search["candidates"][search["chosen"] - 1]
        ms_int8, ms_full, ms_fp32 = timing.get(variant), timing.get(f"first.{variant}"), timing.get("fp32")
        kept = None
        if None not in (ms_int8, ms_full, ms_fp32) and ms_fp32 > ms_full:
            kept = round((ms_fp32 - ms_int8) / (ms_fp32 - ms_full), 3)
        rows.append(
            {
                "dataset": Path(json.loads((fold / "split.json").read_text())["data"]).name,
                "arch": manifest["arch"],
                "fold": int(fold.name.split("-")[1]),
                "precision": variant,
                "shipped": entry.get("shipped", True),
                "fp32_val": gate["fp32_accuracy"],
                "int8_val": gate["accuracy"],
                "val_n": gate["n"],
                "fp32_test": fp32["accuracy"],
                "int8_test": entry["accuracy"]["accuracy"],
                "test_n": fp32["n"],
                "calibration": chosen["calibration"],
                "per_channel": chosen["per_channel"],
                "keep_float": chosen["keep_float"],
                "candidates": len(search["candidates"]),
                "stopped": search["stopped"],
                "ms_fp32": ms_fp32,
                "ms_int8": ms_int8,
                "ms_full_int8": ms_full,
                "speedup_kept": kept,
            }
        )
    return rows


def _points(a: float, b: float) -> float:
    return round((a - b) * 100, 2)


def write_markdown(rows: list[dict], machine: dict, command: str, path: Path) -> None:
    lines = [
        "# INT8 that ships: the export's accuracy-aware search over the folds",
        "",
        f"Command: `{command}`. Every fold exported with `sperm-edge export RUN --out BUNDLE --int8` "
        "(defaults: limit 1 point on validation, 300 s search budget per model). Choices on validation only; "
        "test reported. Latency: batch-1 ONNX Runtime CPU p50 over "
        f"{LATENCY_RUNS} runs, {machine['cpu']}, load average {machine['loadavg']} (one quiet run).",
        "",
        "| set | arch | precision | shipped | worst val drop | worst test drop | mean test FP32 | mean test INT8 "
        "| folds searched | min speed-up kept |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["arch"], row["precision"]), []).append(row)
    for (dataset, arch, precision), group in groups.items():
        kept = [r["speedup_kept"] for r in group if r["speedup_kept"] is not None]
        lines.append(
            f"| {dataset} | {arch} | {precision} | {sum(r['shipped'] for r in group)}/{len(group)} "
            f"| {max(_points(r['fp32_val'], r['int8_val']) for r in group):.2f} "
            f"| {max(_points(r['fp32_test'], r['int8_test']) for r in group):.2f} "
            f"| {statistics.mean(r['fp32_test'] for r in group):.3f} "
            f"| {statistics.mean(r['int8_test'] for r in group):.3f} "
            f"| {sum(r['candidates'] > 1 for r in group)} | {min(kept) if kept else '-'} |"
        )
    lines += [
        "",
        "Per fold (drops in points; `speed-up kept`: (FP32 - INT8) / (FP32 - first candidate) latency):",
        "",
        "| set | arch | fold | precision | shipped | val n | val FP32 | val INT8 | test FP32 | test INT8 | calibration "
        "| weights | float layers | candidates | ms FP32 | ms INT8 | ms first | speed-up kept |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['arch']} | {r['fold']} | {r['precision']} | {'yes' if r['shipped'] else 'no'} "
            f"| {r['val_n']} | {r['fp32_val']:.3f} | {r['int8_val']:.3f} | {r['fp32_test']:.3f} | {r['int8_test']:.3f} "
            f"| {r['calibration']} | {'per-channel' if r['per_channel'] else 'per-tensor'} | {len(r['keep_float'])} "
            f"| {r['candidates']} ({r['stopped']}) | {r['ms_fp32'] or '-'} | {r['ms_int8'] or '-'} "
            f"| {r['ms_full_int8'] or '-'} | {r['speedup_kept'] if r['speedup_kept'] is not None else '-'} |"
        )
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="folders of fold-K runs")
    parser.add_argument("--cache", type=Path, required=True, help="where bundles are kept between invocations")
    parser.add_argument("--time", action="store_true", help="time every bundle's models (run with nothing beside)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_search"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        folds = _folds(args.runs)
        for fold in folds:
            export_fold(fold, _slot(args.cache, fold))
        loadavg = load_average()
        if args.time:
            for fold in folds:
                log.info("timing %s", fold)
                time_fold(_slot(args.cache, fold))
    except SpermEdgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [row for fold in folds for row in fold_rows(fold, _slot(args.cache, fold))]
    machine = {"cpu": cpu_name(), "loadavg": loadavg}
    command = "python benchmarks/int8_search.py " + " ".join(sys.argv[1:] if argv is None else argv)
    atomic_write_json(args.out.with_suffix(".json"), {"machine": machine, "command": command, "rows": rows})
    write_markdown(rows, machine, command, args.out.with_suffix(".md"))
    print(f"written: {args.out}.json and .md ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
