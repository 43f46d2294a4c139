"""Alternating rounds, warm-up, exact call counts and failure isolation, with fake engines (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from sperm_edge.bench.harness import Timing, TimingConfig, time_runners


class FakeRunner:
    """Records each call's batch size into a shared log; can fail from its n-th call on."""

    def __init__(self, name: str, log: list, fail_after: int | None = None) -> None:
        self.name, self.log, self.fail_after, self.calls = name, log, fail_after, 0

    def __enter__(self) -> FakeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("engine exploded")
        self.log.append((self.name, batch.shape[0]))
        return np.zeros((batch.shape[0], 3), np.float32)


def test_rounds_alternate_the_variants_and_time_exactly_iters_calls() -> None:
    log: list = []
    runners = {"a": FakeRunner("a", log), "b": FakeRunner("b", log)}
    cfg = TimingConfig(batches=(1, 2), iters=5, warmup=2, rounds=2)
    timings, failed = time_runners(runners, (3, 8, 8), cfg)
    assert failed == {}
    for key in runners:
        for batch in (1, 2):
            assert len(timings[(key, batch)].samples_ms) == 5
    # per runner: warm-up 2 per batch, plus per round and batch one untimed call and its share of iters
    assert runners["a"].calls == 2 * 2 + 2 * 2 + 5 * 2
    timed = [name for name, _ in log[2 * 2 * 2 :]]  # after the warm-up
    first_round_batch1 = timed[: 1 + 3 + 1 + 3]
    second_round_batch1 = timed[16 : 16 + 1 + 2 + 1 + 2]
    assert first_round_batch1[0] == "a" and second_round_batch1[0] == "b"  # the order rotates per round


def test_a_failing_engine_is_reported_and_the_others_go_on() -> None:
    log: list = []
    runners = {"good": FakeRunner("good", log), "bad": FakeRunner("bad", log, fail_after=1)}
    timings, failed = time_runners(runners, (3, 8, 8), TimingConfig(batches=(1,), iters=4, warmup=1, rounds=2))
    assert failed == {"bad": "RuntimeError: engine exploded"}
    assert len(timings[("good", 1)].samples_ms) == 4
    assert timings[("bad", 1)].samples_ms == []


def test_summary_percentiles_and_throughput() -> None:
    timing = Timing(batch=8, samples_ms=[float(v) for v in range(1, 101)])
    summary = timing.summary()
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p95_ms"] == pytest.approx(95.05)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["images_per_s"] == pytest.approx(8 * 1000 / 50.5, rel=1e-3)
    assert summary["iters"] == 100
    assert Timing(batch=1).summary() == {}


def test_timing_config_is_validated() -> None:
    with pytest.raises(ValueError, match="batch sizes must be positive"):
        TimingConfig(batches=(0,))
    with pytest.raises(ValueError, match="iters and rounds"):
        TimingConfig(iters=0)
    assert [TimingConfig(iters=7, rounds=3).calls_in_round(r) for r in range(3)] == [3, 2, 2]
    assert TimingConfig(iters=2, rounds=5).effective_rounds == 2
