"""What the engine's Grad-CAM++ costs: latency with vs without the extra outputs, stream FPS with vs without maps.

1. Engine latency, ONNX Runtime CPU through the runtime's `OrtBackend` (so `infer` and its named
   outputs are part of the figure): each bundle model (FP32 and the CPU INT8 one) against the same
   model with `cam` and `features` cut away (`onnx.utils.extract_model` to `logits` only), at
   batch 1 and 8. The two run in alternating rounds (order flipped every round) so drift and
   other load hit both alike; the figure is the median call.
2. Stream FPS, the runtime's `Pipeline` + `RunOutputs` on synthetic microscope fields (field
   mode) and single-cell crops (crop mode): `--explain every` (flagged cells' files plus every
   cell's heatmap kept per track) against `--explain none`, alternating runs; once with the
   runtime's flagging (on synthetic frames most cells are flagged, so this mostly measures
   writing their explanation files) and once with nothing flagged (the maps alone: the engine
   outputs and every cell's heatmap).

3. What drawing the bundle's LayerCAM explainer costs the stream: field-mode FPS with `--explain flagged`
   (the runtime's flagging) when explained cells get the explainer's map (`explain.maps` "explainer":
   one extra pass per flagged cell, on the writer thread) against the same bundle drawing its `cam`
   output, alternating runs (`--explainer-only`: this alone, into explainer_speed.json and .md).

    python benchmarks/cam_speed.py \\
        --bundle hushem=HUSHEM_BUNDLE --bundle smids=SMIDS_BUNDLE

writes benchmarks/results/explanations/speed.json and speed.md (with the load average before and after).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx.utils

from sperm_edge.bench.stream import StreamConfig, run_stream, write_crop_frames, write_field_frames
from sperm_edge.bundle import load_bundle
from sperm_edge.engines import OrtBackend
from sperm_edge.hardware import cpu_name
from sperm_edge.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger("cam_speed")


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "n/a"


def _logits_only(model: Path, out: Path) -> Path:
    onnx.utils.extract_model(str(model), str(out), ["input"], ["logits"])
    return out


def latency(bundle, precision: str, work: Path, rounds: int, iters: int, threads: int) -> list[dict]:
    """Median ms per call, with and without the extra outputs, at batch 1 and 8, in alternating rounds."""
    model = bundle.onnx_path(precision)
    plain = _logits_only(model, work / f"{bundle.path.name}.{precision}.logits.onnx")
    size = bundle.card.preprocess.img_size
    rows = []
    with OrtBackend(model, precision=precision, threads=threads) as full, \
            OrtBackend(plain, precision=precision, threads=threads) as bare:  # fmt: skip
        assert full.has_cam and not bare.has_cam
        for batch in (1, 8):
            x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
            times: dict[str, list[float]] = {"with": [], "without": []}
            for engine in (full, bare):
                for _ in range(3):
                    engine.infer(x)  # warm-up
            for r in range(rounds):
                order = (("with", full), ("without", bare)) if r % 2 == 0 else (("without", bare), ("with", full))
                for key, engine in order:
                    for _ in range(iters if batch == 1 else max(3, iters // 4)):
                        start = time.perf_counter()
                        engine.infer(x)
                        times[key].append((time.perf_counter() - start) * 1000.0)
            with_ms, without_ms = statistics.median(times["with"]), statistics.median(times["without"])
            rows.append({
                "bundle": bundle.path.name, "precision": precision, "batch": batch, "calls": len(times["with"]),
                "with_outputs_ms": round(with_ms, 3), "logits_only_ms": round(without_ms, 3),
                "ratio": round(with_ms / without_ms, 4),
            })  # fmt: skip
            log.info("%s", rows[-1])
    return rows


def _alternate(arms: dict, folder: Path, work: Path, mode: str, cfg, rounds: int, threads: int, policy) -> dict:
    """Runs of each arm (name -> (bundle, --explain)) over the same frames, in an order flipped every round."""
    names = list(arms)
    first, explain = arms[names[0]]
    run_stream(first, folder, work / "warm", mode, explain, cfg, threads, policy)  # warm caches and the page cache
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            bundle, explain = arms[name]
            runs[name].append(run_stream(bundle, folder, work / f"out-{name}", mode, explain, cfg, threads, policy))
    return runs


def _frames(bundle, work: Path, mode: str, frames: int) -> tuple[Path, StreamConfig]:
    cfg = StreamConfig(modes=(mode,), frames=frames, backend="ort-cpu", precision="fp32")
    folder = work / f"{bundle.path.name}-{mode}-frames"
    folder.mkdir(parents=True, exist_ok=True)
    (write_field_frames if mode == "field" else lambda f, b, c: write_crop_frames(f, b, c, None))(folder, bundle, cfg)
    return folder, cfg


def stream_fps(bundle, work: Path, mode: str, frames: int, rounds: int, threads: int, flag: bool = True) -> dict:
    """FPS of `--explain every` vs `--explain none`, alternating runs over the same frames.

    `flag` False: a policy that flags nothing, so no file is written and only the maps cost.
    """
    from sperm_edge.runtime.flagging import FlagPolicy

    policy = None if flag else FlagPolicy.for_classes([], min_confidence=0.0, min_stability=0.0)
    folder, cfg = _frames(bundle, work, mode, frames)
    runs = _alternate({"none": (bundle, "none"), "every": (bundle, "every")}, folder, work, mode, cfg, rounds,
                      threads, policy)  # fmt: skip
    fps = {k: [row["fps"] for row in v] for k, v in runs.items()}
    return {
        "bundle": bundle.path.name, "mode": mode, "flagging": "runtime policy" if flag else "nothing flagged",
        "frames": frames, "runs_each": rounds,
        "fps_none": fps["none"], "fps_every": fps["every"],
        "median_fps_none": statistics.median(fps["none"]), "median_fps_every": statistics.median(fps["every"]),
        "ratio": round(statistics.median(fps["every"]) / statistics.median(fps["none"]), 4),
        "cells_per_run": runs["every"][0]["cells"], "flagged_per_run": runs["every"][0]["flagged"],
        "explained_per_run": runs["every"][0].get("explained"),
    }  # fmt: skip


def explainer_fps(bundle, work: Path, frames: int, rounds: int, threads: int) -> dict | None:
    """Field-mode FPS of `--explain flagged` drawing the bundle's LayerCAM explainer (one extra pass per flagged
    cell, on the writer thread) against the same bundle drawing its `cam` output, alternating; None without one."""
    from sperm_edge.bundle import Bundle

    section = bundle.manifest.get("explain") or {}
    if section.get("maps") != "explainer":
        return None
    as_cam = Bundle(bundle.path, {**bundle.manifest, "explain": {**section, "maps": "cam"}})  # same files
    folder, cfg = _frames(bundle, work, "field", frames)
    arms = {"cam": (as_cam, "flagged"), "explainer": (bundle, "flagged")}
    runs = _alternate(arms, folder, work, "field", cfg, rounds, threads, None)
    fps = {k: [row["fps"] for row in v] for k, v in runs.items()}
    return {
        "bundle": bundle.path.name, "mode": "field", "frames": frames, "runs_each": rounds,
        "explainer_layer": section["explainer"]["layer"], "fps_cam": fps["cam"], "fps_explainer": fps["explainer"],
        "median_fps_cam": statistics.median(fps["cam"]), "median_fps_explainer": statistics.median(fps["explainer"]),
        "ratio": round(statistics.median(fps["explainer"]) / statistics.median(fps["cam"]), 4),
        "cells_per_run": runs["explainer"][0]["cells"], "flagged_per_run": runs["explainer"][0]["flagged"],
        "explained_per_run": runs["explainer"][0].get("explained"),
        "drain_s": [row.get("explain_drain_s") for row in runs["explainer"]],
    }  # fmt: skip


def _markdown(report: dict) -> str:
    lines = ["# Cost of the engine's Grad-CAM++ outputs", "", f"load average before: {report['loadavg_before']}, "
             f"after: {report['loadavg_after']}; {report['machine']['cpu']}, {report['threads']} threads", "",
             "| bundle | precision | batch | with cam+features ms | logits only ms | ratio |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in report["latency"]:
        lines.append(f"| {r['bundle']} | {r['precision']} | {r['batch']} | {r['with_outputs_ms']:.2f} | "
                     f"{r['logits_only_ms']:.2f} | {r['ratio']:.3f} |")  # fmt: skip
    lines += ["", "| bundle | mode | flagging | cells (flagged) | FPS --explain every | FPS --explain none | ratio |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in report["stream"]:
        cells = f"{r['cells_per_run']} ({r['flagged_per_run']})"
        lines.append(f"| {r['bundle']} | {r['mode']} | {r['flagging']} | {cells} | "
                     f"{r['median_fps_every']:.1f} | {r['median_fps_none']:.1f} | {r['ratio']:.3f} |")  # fmt: skip
    if report.get("explainer"):
        lines += ["", "| bundle | explainer layer | cells (flagged) | FPS drawing LayerCAM | FPS drawing cam | ratio |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in report["explainer"]:
            cells = f"{r['cells_per_run']} ({r['flagged_per_run']})"
            lines.append(f"| {r['bundle']} | {r['explainer_layer']} | {cells} | {r['median_fps_explainer']:.2f} | "
                         f"{r['median_fps_cam']:.2f} | {r['ratio']:.3f} |")  # fmt: skip
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="NAME=BUNDLE (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explanations"))
    parser.add_argument("--rounds", type=int, default=10, help="alternating latency rounds")
    parser.add_argument("--iters", type=int, default=20, help="batch-1 calls per round (batch 8: a quarter)")
    parser.add_argument("--stream-rounds", type=int, default=4, help="stream runs of each setting")
    parser.add_argument("--field-frames", type=int, default=30)
    parser.add_argument("--crop-frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--explainer-only",
        action="store_true",
        help="only field FPS drawing the LayerCAM explainer vs the cam output (explainer_speed.*)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = {"command": " ".join(["python benchmarks/cam_speed.py", *(sys.argv[1:] if argv is None else argv)]),
              "machine": {"cpu": cpu_name()}, "threads": args.threads, "loadavg_before": _loadavg(),
              "latency": [], "stream": [], "explainer": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cam-speed-") as tmp:
        work = Path(tmp)
        for spec in args.bundle:
            _, path = spec.split("=", 1)
            bundle = load_bundle(path)
            row = explainer_fps(bundle, work, args.field_frames, args.stream_rounds, args.threads)
            if row is not None:
                report["explainer"].append(row)
                log.info("%s", row)
            if args.explainer_only:
                continue
            precisions = ["fp32"] + [p for p in ("int8_cpu", "int8") if p in bundle.precisions()][:1]
            for precision in precisions:
                report["latency"] += latency(bundle, precision, work, args.rounds, args.iters, args.threads)
            for flag in (True, False):
                for mode, frames in (("field", args.field_frames), ("crop", args.crop_frames)):
                    row = stream_fps(bundle, work, mode, frames, args.stream_rounds, args.threads, flag)
                    report["stream"].append(row)
                    log.info("%s", row)
    report["loadavg_after"] = _loadavg()
    name = "explainer_speed" if args.explainer_only else "speed"
    atomic_write_json(args.out / f"{name}.json", report)
    atomic_write_bytes(args.out / f"{name}.md", _markdown(report).encode())
    log.info("written: %s", args.out / f"{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
