"""Soak: the runtime on a looping source for hours' worth of frames; what must stay flat, sampled over time.

    python benchmarks/soak.py [--bundle B] [--crop-frames 100000] [--field-frames 20000] [--out benchmarks/results]

Runs the session `sperm-edge run --loop` opens (`runtime.session`, with tracking in field mode) on
looping video files: single-cell crops (crop mode) and a synthetic panning field (field mode), reopened
from the start at every end, as a recording replayed for hours would be. A sampler thread records, every
`--interval` seconds: frames, FPS over the interval, resident memory (RSS), open file descriptors,
threads (the kernel's count, so ONNX Runtime's pool is included), the per-frame tracking time (the p50
of the pipeline's recent `tracking` stage; `postprocessing`, which holds it, where the pipeline has no
such stage) and, every `--disk-every` samples, what the run folder holds on disk (`du`: events,
flagged crops and frames; the filesystem's free space lags writes by seconds, so it cannot say).

Checks, after a warm-up of the first `--warmup` fraction of each run: RSS is flat or bounded: it grows
by at most 5% (median of the last tenth of samples against the median of the tenth after warm-up),
or it has stopped growing (at most 0.5% over the last quarter: a store of fixed size, such as the
tracker's memory of ended cells, filled and then held), and
descriptors and threads do not grow: the most in the last quarter does not exceed the most in the
first quarter after warm-up (an instant's count includes transient ones, such as a capture reopening
at each loop, so its floor and median flicker by one either way: earlier rules on them failed runs
without a trend; a leak raises the ceiling). The output folder
grows with the cells it records (one line and, when flagged, one crop each): bounded means the growth
per 1000 frames in the last quarter is at most 1.25 times the second quarter's (full-frame images
stop at the run's cap; nothing else may pile up faster as the run ages). FPS and tracking
time are reported as the ratio of the last quarter's median to the second quarter's. Writes
`soak.json` (every sample, the checks, the machine, the command) and `soak.png`; exits 1 when a
check fails. `--recheck soak.json` applies the current checks to a run's saved samples, keeping
the verdicts it was run with (`checks_as_run`).

Without `--bundle` it builds the test suite's tiny bundle (Lite0 + CBAM at 64 px, untrained head):
the soak is about the runtime's resources, not the network's accuracy, and a small network lets
100,000 frames run in minutes on two cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _live import tiny_bundle  # noqa: E402

from sperm_edge.bundle import Bundle, load_bundle  # noqa: E402
from sperm_edge.io import atomic_path, atomic_write_json  # noqa: E402

RSS_GROWTH_MAX = 0.05
RSS_BOUNDED_MAX = 0.005
DISK_RATE_RATIO_MAX = 1.25


def process_sample() -> dict:
    """RSS (MB), open descriptors and threads of this process, from /proc."""
    status = Path("/proc/self/status").read_text().splitlines()
    field = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in status if ":" in line}
    return {
        "rss_mb": round(int(field["VmRSS"].split()[0]) / 1024, 2),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": int(field["Threads"]),
    }


def folder_mb(path: Path) -> float | None:
    """What `path` holds on disk, in MB, by `du` (its own process: a walk of hundreds of thousands of crops in
    this one would hold the interpreter's lock the run needs); None where `du` fails."""
    try:
        done = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, timeout=120)
        return round(int(done.stdout.split()[0]) / 1024, 2)
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


class Sampler(threading.Thread):
    """Samples the pipeline, the process and the output folder every `interval` seconds until stopped."""

    def __init__(self, pipeline, out: Path, interval: float, disk_every: int) -> None:
        super().__init__(name="soak sampler", daemon=True)
        self.pipeline, self.out, self.interval, self.disk_every = pipeline, out, interval, disk_every
        self.samples: list[dict] = []
        self._halt = threading.Event()
        self._start = time.perf_counter()
        self._last = (self._start, 0)

    def sample(self) -> None:
        now, frames = time.perf_counter(), self.pipeline.frames
        stages = self.pipeline.times.summary()
        stage = "tracking" if "tracking" in stages else "postprocessing"
        then, before = self._last
        self._last = (now, frames)
        self.samples.append(
            {
                "t": round(now - self._start, 2),
                "frames": frames,
                "fps": round((frames - before) / max(1e-9, now - then), 2),
                **process_sample(),
                "disk_mb": folder_mb(self.out) if len(self.samples) % self.disk_every == 0 else None,
                "tracking_ms": stages[stage]["p50"],
                "tracking_stage": stage,
            }
        )

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        """Stop sampling (before the pipeline shuts down: a sample then would show its threads ending)."""
        self._halt.set()
        self.join()


def make_crop_clip(path: Path, size: int, n: int = 96, seed: int = 0) -> Path:
    """An MJPG clip of `n` synthetic single-cell crops at `size` px, one per frame."""
    from sperm_edge.data.synthetic import write_crop_dataset

    crops = write_crop_dataset(path.parent / "crops", n, "hushem", seed, force=True)
    images = sorted(p for p in crops.rglob("*.png") if not any(part.startswith("_") for part in p.parts))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (size, size))
    for image in images:
        writer.write(cv2.resize(cv2.imread(str(image)), (size, size), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def make_field_clip(path: Path, size: tuple[int, int], frames: int = 120, seed: int = 0) -> Path:
    from sperm_edge.data.synthetic import write_video

    return write_video(path, frames=frames, seed=seed, size=size, fps=15.0, force=True)


def soak_mode(bundle: Bundle, clip: Path, mode: str, frames: int, out: Path, args) -> dict:
    """One soak run: `frames` frames of `clip`, looping, in the session `sperm-edge run --loop` opens; its samples
    and the pipeline's final stats."""
    from sperm_edge.runtime.session import SessionOptions, open_session
    from sperm_edge.runtime.sources import SourceOptions

    options = SessionOptions(
        backend=args.backend, threads=args.threads, mode=mode, max_frames=frames, source=SourceOptions(loop=True)
    )
    with open_session(bundle, str(clip), out, options) as session:
        sampler = Sampler(session.pipeline, out, args.interval, args.disk_every)
        sampler.start()
        session.run()
        sampler.stop()
    stats, backend, outputs = session.stats, session.engine.describe(), session.outputs
    return {
        "mode": mode,
        "clip": clip.name,
        "frames": stats["frames"],
        "fps": stats["fps"],
        "events": outputs.count,
        "reopens": stats["source_stats"]["reopens"],
        "backend": backend,
        "stages_ms_mean": {k: v["mean"] for k, v in stats["stages_ms"].items() if v["n"]},
        "samples": sampler.samples,
    }


def _window(samples: list[dict], start: float, stop: float) -> list[dict]:
    n = len(samples)
    return samples[int(n * start) : max(int(n * start) + 1, int(n * stop))]


def _rate(rows: list[dict], key: str) -> float:
    """Growth of `key` per 1000 frames from the first to the last of `rows`."""
    frames = rows[-1]["frames"] - rows[0]["frames"]  # (a window of one sample grows by nothing)
    return round(1000 * (rows[-1][key] - rows[0][key]) / frames, 4) if frames else 0.0


def flatness(samples: list[dict], warmup: float) -> dict:
    """The checks of the module docstring on one run's samples (after its warm-up)."""
    after = [s for s in samples if s["frames"] >= warmup * samples[-1]["frames"]]
    if len(after) < 8:
        return {"ok": False, "reason": f"only {len(after)} samples after warm-up; use a shorter --interval"}

    def median(rows: list[dict], key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return statistics.median(values) if values else None

    rss_base, rss_end = median(_window(after, 0.0, 0.1), "rss_mb"), median(_window(after, 0.9, 1.0), "rss_mb")
    checks = {"rss": {"baseline_mb": rss_base, "final_mb": rss_end, "growth": round(rss_end / rss_base - 1, 4)}}
    # bounded: memory that fills a fixed-size store (the tracker's ended cells) and then stays put
    last_start = median(_window(after, 0.75, 0.8), "rss_mb")
    checks["rss"]["last_quarter_growth"] = round(rss_end / last_start - 1, 4)
    checks["rss"]["ok"] = (checks["rss"]["growth"] <= RSS_GROWTH_MAX
                           or checks["rss"]["last_quarter_growth"] <= RSS_BOUNDED_MAX)  # fmt: skip
    for key in ("fds", "threads"):
        # An instant's count includes transient ones (a capture reopening at each loop, a flagged crop being
        # written, a worker between two jobs), so the floor and the median flicker by one either way; a leak
        # raises the ceiling, and a leak of even one a run lifts the last quarter above the first one's most.
        early, late = _window(after, 0.0, 0.25), _window(after, 0.75, 1.0)
        checks[key] = {f"{name}_{stat}": fn(r[key] for r in rows) for name, rows in (("early", early), ("late", late))
                       for stat, fn in (("min", min), ("median", statistics.median), ("max", max))}  # fmt: skip
        checks[key]["ok"] = checks[key]["late_max"] <= checks[key]["early_max"]
    for key in ("fps", "tracking_ms"):
        early, late = median(_window(after, 0.25, 0.5), key), median(_window(after, 0.75, 1.0), key)
        checks[key] = {"q2_median": early, "q4_median": late,
                       "ratio": round(late / early, 3) if early and late else None}  # fmt: skip
    disk = [r for r in after if r.get("disk_mb") is not None]  # runs recorded before it have no disk figures
    if len(disk) >= 8:
        checks["disk"] = {f"{q}_mb_per_1k_frames": _rate(_window(disk, *span), "disk_mb")
                          for q, span in (("q2", (0.25, 0.5)), ("q4", (0.75, 1.0)))}  # fmt: skip
        q2, q4 = checks["disk"]["q2_mb_per_1k_frames"], checks["disk"]["q4_mb_per_1k_frames"]
        checks["disk"]["ok"] = q4 <= DISK_RATE_RATIO_MAX * q2 + 1e-3
    checks["ok"] = all(checks[k]["ok"] for k in ("rss", "fds", "threads", "disk") if k in checks)
    return checks


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("fps", "FPS"), ("rss_mb", "RSS (MB)"), ("fds", "open descriptors"), ("threads", "threads"),
            ("disk_mb", "output folder (MB)"), ("tracking_ms", "tracking p50 (ms)"))  # fmt: skip
    fig, axes = plt.subplots(len(keys), len(runs), figsize=(5.5 * len(runs), 2.2 * len(keys)), squeeze=False)
    for col, run in enumerate(runs):
        frames = np.array([s["frames"] for s in run["samples"]]) / 1000.0
        for row, (key, label) in enumerate(keys):
            ax = axes[row][col]
            kept = [i for i, s in enumerate(run["samples"]) if s.get(key) is not None]  # disk: every Nth sample
            ax.plot(frames[kept], [run["samples"][i][key] for i in kept], lw=1)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 0:
                ok = "flat" if run["checks"].get("ok") else "NOT flat"
                ax.set_title(f"{run['mode']} mode: {run['frames']} frames, {run['fps']:.0f} FPS ({ok})")
            if row == len(keys) - 1:
                ax.set_xlabel("frames (thousands)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def recheck(path: Path, warmup: float) -> int:
    """Apply this version's checks to the samples of an earlier run; the earlier verdicts are kept beside."""
    import json

    result = json.loads(path.read_text())
    for run in result["runs"]:
        run.setdefault("checks_as_run", run["checks"])
        run["checks"] = flatness(run["samples"], warmup)
    result["ok"] = all(run["checks"].get("ok") for run in result["runs"])
    result["rechecked"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(path, result)
    plot(result["runs"], path.with_suffix(".png"))
    print(f"rechecked {path}: {'flat' if result['ok'] else 'NOT flat'}")
    return 0 if result["ok"] else 1


def _bundle(args, work: Path) -> Bundle:
    """--bundle, else the test suite's tiny bundle."""
    return load_bundle(args.bundle or tiny_bundle(work))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="Bundle to run (default: build the tiny test bundle).")
    parser.add_argument("--backend", default="ort-cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--crop-frames", type=int, default=100_000)
    parser.add_argument("--field-frames", type=int, default=20_000)
    parser.add_argument("--field-size", default="320x240", help="WIDTHxHEIGHT of the field clip.")
    parser.add_argument("--interval", type=float, default=2.0, help="Seconds between samples.")
    parser.add_argument("--disk-every", type=int, default=10, help="Measure the run folder every Nth sample.")
    parser.add_argument("--warmup", type=float, default=0.1, help="Fraction of each run left out of the checks.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    parser.add_argument("--recheck", type=Path, help="Recompute the checks and plot of a soak.json (no new run).")
    args = parser.parse_args(argv)
    if args.recheck:
        return recheck(args.recheck, args.warmup)
    width, height = (int(v) for v in args.field_size.lower().split("x"))
    from sperm_edge.bench.machine import machine_facts

    load_start = Path("/proc/loadavg").read_text().strip()
    with tempfile.TemporaryDirectory(prefix="sperm-edge-soak-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bundle = _bundle(args, work)
        size = bundle.card.preprocess.img_size
        plan = [("crop", make_crop_clip(work / "crops.avi", size), args.crop_frames),
                ("field", make_field_clip(work / "field.mp4", (width, height)), args.field_frames)]  # fmt: skip
        runs = []
        for mode, clip, frames in plan:
            if frames <= 0:
                continue
            print(f"soak: {mode} mode, {frames} frames of {clip.name} (looping)", flush=True)
            run = soak_mode(bundle, clip, mode, frames, work / f"out-{mode}", args)
            run["checks"] = flatness(run["samples"], args.warmup)
            print(f"  {run['frames']} frames at {run['fps']:.1f} FPS; checks: {run['checks']}", flush=True)
            runs.append(run)
        threads = runs[0]["backend"].get("threads", 1) if runs else 1
        result = {
            "command": "python benchmarks/soak.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg_start_end": [load_start, Path("/proc/loadavg").read_text().strip()],
            "bundle": {"path": str(bundle.path), "arch": bundle.card.arch, "img_size": size},
            "python": platform.python_version(),
            "torch_loaded": "torch" in sys.modules,
            "machine": machine_facts(threads),
            "rss_growth_max": RSS_GROWTH_MAX,
            "ok": bool(runs) and all(r["checks"].get("ok") for r in runs),
            "runs": runs,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "soak.json", result)
    plot(runs, args.out / "soak.png")
    print(f"written: {args.out / 'soak.json'}, {args.out / 'soak.png'}; {'flat' if result['ok'] else 'NOT flat'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
