"""ONNX Runtime on the CPU, as export uses it (`engines.ort`'s sessions): outputs of real images and a batch-1
latency figure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sperm_edge.engines.ort import OrtBackend
from sperm_edge.hardware import cpu_name
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch


def ort_outputs(
    session: ort.InferenceSession, images: Sequence[np.ndarray], spec: PreprocessSpec, batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Every output by name (float32, first axis N) for RGB uint8 images, preprocessed as the runtime does."""
    name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(images), batch_size):
        values = session.run(None, {name: preprocess_batch(images[start : start + batch_size], spec)})
        for key, value in zip(names, values, strict=True):
            parts[key].append(value)
    return {k: np.concatenate(v).astype(np.float32) if v else np.zeros((0, 0), np.float32) for k, v in parts.items()}


def ort_logits(
    session: ort.InferenceSession, images: Sequence[np.ndarray], spec: PreprocessSpec, batch_size: int = 32
) -> np.ndarray:
    """Logits (N x classes, float32) of RGB uint8 images, preprocessed exactly like the runtime does."""
    outputs = ort_outputs(session, images, spec, batch_size)
    return outputs.get("logits", next(iter(outputs.values())))


@dataclass
class Latency:
    """One `benchmarks` entry of the manifest (the runtime's `--backend auto` reads these)."""

    backend: str
    precision: str
    batch: int
    p50_ms: float
    runs: int
    machine: dict

    def to_dict(self) -> dict:
        return asdict(self)


def measure_latency(
    path: str | Path, precision: str, img_size: int, runs: int = 20, warmup: int = 5, threads: int | None = None
) -> Latency:
    """Median wall time of `runs` batch-1 inferences on random input after `warmup` untimed ones, through the
    runtime's own ONNX Runtime backend and session settings (what `--backend auto` will run)."""
    backend = OrtBackend(path, "cpu", precision, threads)
    batch = np.random.default_rng(0).standard_normal((1, 3, img_size, img_size)).astype(np.float32)
    times = []
    with backend:
        for _ in range(warmup):
            backend.infer(batch)
        for _ in range(runs):
            start = time.perf_counter()
            backend.infer(batch)
            times.append((time.perf_counter() - start) * 1000.0)
    return Latency(
        backend="ort-cpu",
        precision=precision,
        batch=1,
        p50_ms=round(statistics.median(times), 3),
        runs=runs,
        machine={"cpu": cpu_name(), "threads": backend.threads},
    )
