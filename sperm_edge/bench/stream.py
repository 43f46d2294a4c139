"""End-to-end figures: the runtime's stream FPS per mode, with and without explanations, and Grad-CAM++ latency.

The network is one stage of the stream; localisation, cropping, preprocessing, tracking and
writing outputs take their share, and explanations add theirs. So the stream is measured in the
session `sperm-edge run` opens (`runtime.session.open_session`, with the command's defaults and
every setting the bundle decides), with explanations from the engine's `cam` output (`--explain
flagged|every`; an `ExplainWorker` for a model without one) or without, on frames written to a
scratch folder:
microscope fields rendered by the synthetic generator (field mode) and single-cell crops from
the labelled folder, or synthetic crops without one (crop mode). Files are read as fast as they
decode (no pacing), so FPS is what the machine sustains. Grad-CAM++ latency is measured on its
own, one crop at a time, after a warm-up.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sperm_edge.bench.harness import StepCallback
from sperm_edge.bundle import Bundle
from sperm_edge.io import atomic_write_bytes
from sperm_edge.runtime.sources.uri import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamConfig:
    """What to stream: modes, frames per measurement, the engine (runtime names), field size, Grad-CAM++ crops."""

    modes: tuple[str, ...] = ("field", "crop")
    frames: int = 30
    backend: str = "auto"
    precision: str | None = None
    field_size: tuple[int, int] = (1280, 960)
    distinct_fields: int = 4
    gradcam_crops: int = 10
    explain_queue: int = 8
    seed: int = 0


def _style_for(bundle: Bundle) -> str:
    """The synthetic style whose classes are the bundle's (its stains and shapes), else HuSHeM's."""
    from sperm_edge.data.synthetic import STYLES

    for name, style in STYLES.items():
        if list(style.classes) == bundle.card.classes:
            return name
    return "hushem"


def _encode(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def write_field_frames(folder: Path, bundle: Bundle, cfg: StreamConfig) -> Path:
    """`cfg.frames` PNG fields (a few distinct renders, repeated), so the stream has cells to find."""
    from sperm_edge.data.synthetic import render_field

    rng = np.random.default_rng(cfg.seed)
    style = _style_for(bundle)
    renders = [_encode(render_field(rng, style, cfg.field_size)[0]) for _ in range(max(1, cfg.distinct_fields))]
    for i in range(cfg.frames):
        atomic_write_bytes(folder / f"field_{i:05d}.png", renders[i % len(renders)])
    return folder


def write_crop_frames(folder: Path, bundle: Bundle, cfg: StreamConfig, data: Path | None) -> Path:
    """`cfg.frames` single-cell crops: the labelled folder's images in turn, or synthetic crops without one."""
    if data is not None:
        sources = sorted(p for p in Path(data).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if sources:
            for i in range(cfg.frames):
                src = sources[i % len(sources)]
                shutil.copyfile(src, folder / f"crop_{i:05d}{src.suffix.lower()}")
            return folder
    from sperm_edge.data.synthetic import get_style, render_crop

    style = _style_for(bundle)
    classes = list(get_style(style).classes)
    for i in range(cfg.frames):
        image = render_crop(cfg.seed, i, classes[i % len(classes)], style)[0]
        atomic_write_bytes(folder / f"crop_{i:05d}.png", _encode(image))
    return folder


def run_stream(
    bundle: Bundle, frames: Path, out: Path, mode: str, explain: str, cfg: StreamConfig, threads: int, policy=None
) -> dict:
    """One pass of `sperm-edge run --mode MODE --explain EXPLAIN` over `frames`, headless: FPS, cells, stages.

    `policy`: the FlagPolicy (default: the bundle's abnormal classes and the runtime's thresholds).
    """
    from sperm_edge.runtime.session import SessionOptions, open_session

    shutil.rmtree(out, ignore_errors=True)
    options = SessionOptions(
        backend=cfg.backend, precision=cfg.precision, threads=threads, mode=mode, explain=explain, policy=policy
    )
    with open_session(bundle, str(frames), out, options) as session:
        session.run()
        finishing = time.perf_counter()
    stats, described, worker = session.stats, session.engine.describe(), session.worker
    row = {
        "mode": mode,
        "explain": explain,
        "backend": described.get("backend"),
        "precision": described.get("precision"),
        "frames": stats["frames"],
        "fps": stats["fps"],
        "cells": stats["cells_seen"],
        "cells_per_s": round(stats["cells_seen"] / stats["elapsed_s"], 2) if stats["elapsed_s"] else None,
        "flagged": sum(1 for e in session.outputs.events if e.get("flagged")),
        "network_ms_p50": stats["stages_ms"]["network"]["p50"],
        "stages_ms_mean": {k: v["mean"] for k, v in stats["stages_ms"].items() if v["n"]},
    }
    explanations = session.report.get("explanations") or {}
    if worker is not None:
        row.update(
            {
                "explained": len(worker.done),
                "explain_dropped": worker.dropped,
                "explain_source": "torch",
                "explain_drain_s": round(time.perf_counter() - finishing, 2),
            }
        )
    elif explanations:
        row.update({"explained": explanations.get("explained"), "explain_dropped": 0, "explain_source": "engine"})
    return row


def gradcam_latency(checkpoint_stem: Path, crops: list[np.ndarray], threads: int | None, device: str = "cpu") -> dict:
    """Grad-CAM++ of single crops with the runtime's explainer: p50/p95/mean ms after two warm-up calls."""
    from sperm_edge.explain.gradcam import GradCamExplainer

    times = []
    with GradCamExplainer(checkpoint_stem, threads=threads, device=device) as explainer:
        for crop in crops[:2]:
            explainer.explain(crop)
        for crop in crops:
            start = time.perf_counter()
            explainer.explain(crop)
            times.append((time.perf_counter() - start) * 1000.0)
    data = np.asarray(times)
    return {
        "crops": len(times),
        "threads": threads,
        "p50_ms": round(float(np.percentile(data, 50)), 2),
        "p95_ms": round(float(np.percentile(data, 95)), 2),
        "mean_ms": round(float(data.mean()), 2),
    }


def measure_stream(
    bundle: Bundle, data: Path | None, work: Path, cfg: StreamConfig, threads: int, on_step: StepCallback | None = None
) -> dict:
    """{"runs": [one row per mode x explanation], "gradcam": latency}; scratch files go under `work`."""
    from sperm_edge.preprocess import decode_image

    runs, total = [], len(cfg.modes) * 2 + 1
    for mode in cfg.modes:
        frames = work / f"{mode}-frames"
        frames.mkdir(parents=True, exist_ok=True)
        if mode == "field":
            write_field_frames(frames, bundle, cfg)
        else:
            write_crop_frames(frames, bundle, cfg, data)
        for explain in ("none", "flagged"):
            if on_step:
                on_step(f"stream {mode}{' + Grad-CAM++' if explain != 'none' else ''}", len(runs), total)
            runs.append(run_stream(bundle, frames, work / f"{mode}-out", mode, explain, cfg, threads))
    if on_step:
        on_step("Grad-CAM++ latency", len(runs), total)
    crop_dir = work / "gradcam-crops"
    crop_dir.mkdir(parents=True, exist_ok=True)
    write_crop_frames(crop_dir, bundle, StreamConfig(frames=cfg.gradcam_crops, seed=cfg.seed), data)
    crops = [decode_image(p) for p in sorted(crop_dir.iterdir())]
    result = {"runs": runs, "gradcam": gradcam_latency(bundle.checkpoint_stem(), crops, threads)}
    if on_step:
        on_step("stream", total, total)
    return result
