"""Per-stage durations of a stream, recorded by its threads and summarised for the live display and report."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

STAGES = ("capture", "localisation", "preprocessing", "network", "tracking", "postprocessing", "output")


class StageTimes:
    """Per-stage durations: a rolling window (live figures) and totals (the run's means); thread-safe."""

    def __init__(self, window: int = 600) -> None:
        self._recent = {stage: deque(maxlen=window) for stage in STAGES}
        self._total = dict.fromkeys(STAGES, 0.0)
        self._count = dict.fromkeys(STAGES, 0)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        """Record `count` items that took `seconds` together (each is counted at the mean)."""
        with self._lock:
            for _ in range(count):
                self._recent[stage].append(seconds / count)
            self._total[stage] += seconds
            self._count[stage] += count

    def summary(self) -> dict[str, dict]:
        """{stage: {mean (whole run), p50, p95 (recent window), in ms; n}}."""
        out = {}
        with self._lock:
            for stage in STAGES:
                n = self._count[stage]
                recent = np.asarray(self._recent[stage]) * 1000.0
                out[stage] = {
                    "mean": round(self._total[stage] / n * 1000.0, 3) if n else None,
                    "p50": round(float(np.percentile(recent, 50)), 3) if recent.size else None,
                    "p95": round(float(np.percentile(recent, 95)), 3) if recent.size else None,
                    "n": n,
                }
        return out
