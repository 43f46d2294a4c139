"""Peak resident memory of one variant, measured in a fresh child process.

ONNX Runtime and TensorRT allocate natively, so Python's tracemalloc misses them, and in one
process the variants' memory piles up. Each variant therefore runs in its own interpreter
(`python -m sperm_edge.bench.memory SPEC`): it imports the engine, notes the peak RSS, loads the
model and runs a few batches, and reports `peak_rss_mb` (the whole process: what a program that
only runs this backend needs) and `rss_delta_mb` (what loading and inference added on top of the
imported libraries). Linux (/proc/self/status VmHWM); elsewhere `resource.getrusage`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from sperm_edge.bench.variants import Variant

log = logging.getLogger(__name__)


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM, which starts afresh at exec (getrusage's ru_maxrss keeps the
    parent's peak across fork and exec, so a child started by a big benchmark process would report that)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def measure_memory(
    bundle_path: Path, variant: Variant, threads: int, batch: int, calls: int = 3, timeout_s: float = 180.0
) -> dict:
    """{peak_rss_mb, rss_delta_mb} of `variant` at `batch`, or {memory_error} when the child fails."""
    spec = {
        "bundle": str(bundle_path),
        "backend": variant.backend,
        "precision": variant.precision,
        "file": variant.file,
        "threads": threads,
        "batch": batch,
        "calls": calls,
    }
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sperm_edge.bench.memory", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"memory_error": f"memory probe timed out after {timeout_s:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        log.warning("memory probe of %s failed: %s", variant.key, last)
        return {"memory_error": last}
    return json.loads(lines[-1])


def _child(spec: dict) -> dict:
    """Runs in the child: import the engine, load the variant, infer, report peak RSS."""
    import numpy as np

    from sperm_edge.bench.variants import open_runner
    from sperm_edge.bundle import load_bundle

    variant = Variant(spec["backend"], spec["precision"], spec["file"])
    if variant.backend.startswith("torch"):
        import torch  # noqa: F401  (counted in the baseline, like the engine of every other variant)
    elif variant.backend.startswith("ort"):
        import onnxruntime  # noqa: F401
    bundle = load_bundle(spec["bundle"], verify=False)
    baseline = _peak_rss_mb()
    size = bundle.card.preprocess.img_size
    batch = np.random.default_rng(0).standard_normal((spec["batch"], 3, size, size), dtype=np.float32)
    with open_runner(bundle, variant, spec["threads"]) as runner:
        for _ in range(spec["calls"]):
            runner.infer(batch)
    peak = _peak_rss_mb()
    return {"peak_rss_mb": round(peak, 1), "rss_delta_mb": round(peak - baseline, 1)}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(_child(json.loads(sys.argv[1]))))
