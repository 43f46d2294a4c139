"""Latency measurement that treats every variant alike: warm-up, then rounds that alternate the variants.

A machine drifts during a benchmark (turbo, thermal limits, a neighbour's job on a shared core),
so timing variant A fully and then variant B charges the drift to one of them. Here every round
visits every batch size and, within it, every variant in a rotated order; each visit begins with
one untimed call (it absorbs the previous engine's spinning threads and cache eviction) and then
times its share of `iters` calls. Percentiles are taken over all timed calls of a variant and batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from sperm_edge.bench.variants import Runner

log = logging.getLogger(__name__)

StepCallback = Callable[[str, int, int], None]  # (stage description, done, total)


@dataclass(frozen=True)
class TimingConfig:
    """How much to time: total timed calls per variant and batch, untimed warm-up calls, number of rounds."""

    batches: tuple[int, ...] = (1, 8, 32)
    iters: int = 50
    warmup: int = 5
    rounds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise ValueError(f"batch sizes must be positive, got {self.batches}")
        if self.iters < 1 or self.rounds < 1 or self.warmup < 0:
            raise ValueError("iters and rounds must be at least 1, warmup at least 0")

    @property
    def effective_rounds(self) -> int:
        return min(self.rounds, self.iters)

    def calls_in_round(self, r: int) -> int:
        """Timed calls in round `r`: `iters` spread over the rounds, the first rounds taking the remainder."""
        rounds = self.effective_rounds
        return self.iters // rounds + (1 if r < self.iters % rounds else 0)


@dataclass
class Timing:
    """Timed calls of one variant at one batch size, in milliseconds."""

    batch: int
    samples_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """p50/p95/p99/mean/min in ms and images/s (from the median, which noise moves least)."""
        if not self.samples_ms:
            return {}
        data = np.asarray(self.samples_ms)
        p50, p95, p99 = (float(v) for v in np.percentile(data, [50, 95, 99]))
        return {
            "p50_ms": round(p50, 3),
            "p95_ms": round(p95, 3),
            "p99_ms": round(p99, 3),
            "mean_ms": round(float(data.mean()), 3),
            "min_ms": round(float(data.min()), 3),
            "images_per_s": round(self.batch * 1000.0 / p50, 2) if p50 > 0 else None,
            "iters": len(self.samples_ms),
        }


def make_input(batch: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A fixed normalised-looking input (N x C x H x W float32); latency of a CNN does not depend on content."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *shape), dtype=np.float32)


def time_runners(
    runners: Mapping[str, Runner],
    input_shape: tuple[int, int, int],
    cfg: TimingConfig,
    on_step: StepCallback | None = None,
) -> tuple[dict[tuple[str, int], Timing], dict[str, str]]:
    """Time every active runner at every batch size, alternating; returns timings and {key: error} of failures.

    A runner that raises is dropped from later rounds and reported with its error; the others go on.
    """
    inputs = {b: make_input(b, input_shape, cfg.seed) for b in cfg.batches}
    timings = {(key, b): Timing(b) for key in runners for b in cfg.batches}
    failed: dict[str, str] = {}
    keys = list(runners)
    rounds = cfg.effective_rounds
    total = len(keys) * len(cfg.batches) * (cfg.warmup + rounds + cfg.iters)
    done = 0

    def call(key: str, batch: int) -> float | None:
        if key in failed:
            return None
        start = time.perf_counter()
        try:
            runners[key].infer(inputs[batch])
        except Exception as err:  # any engine error fails that variant, not the benchmark
            log.warning("%s failed at batch %d: %s", key, batch, err)
            failed[key] = f"{type(err).__name__}: {err}"
            return None
        return (time.perf_counter() - start) * 1000.0

    for batch in cfg.batches:
        for key in keys:
            for _ in range(cfg.warmup):
                call(key, batch)
            done += cfg.warmup
            if on_step:
                on_step(f"warm-up {key} batch {batch}", done, total)
    for r in range(rounds):
        for batch in cfg.batches:
            order = keys[r % len(keys) :] + keys[: r % len(keys)] if keys else []
            for key in order:
                call(key, batch)  # untimed: settles the previous engine's threads and caches
                for _ in range(cfg.calls_in_round(r)):
                    elapsed = call(key, batch)
                    if elapsed is not None:
                        timings[(key, batch)].samples_ms.append(elapsed)
                done += cfg.calls_in_round(r) + 1
                if on_step:
                    on_step(f"round {r + 1}/{rounds} batch {batch}", done, total)
    return timings, failed
