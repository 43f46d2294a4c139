"""The drift benchmark's run-level false alarms from runs of distinct held-out cells."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from sperm_edge.drift import fit_drift

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "drift.py"


def _bench():
    spec = importlib.util.spec_from_file_location("drift_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distinct_runs_warn_rarely_in_distribution_and_always_when_shifted() -> None:
    bench = _bench()
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    train = rng.normal(size=(200, 12)) + labels[:, None]
    model = fit_drift(train, labels, rng.normal(size=(300, 12)) + rng.integers(0, 2, 300)[:, None], dims=8)
    # from a large held-out set, runs of 20 distinct cells are nearly fresh runs: about the rule's 5%
    held_out = model.score(rng.normal(size=(2000, 12)) + rng.integers(0, 2, 2000)[:, None])
    shifted = model.score(rng.normal(size=(60, 12)) + 4.0)
    assert bench.subsample_rate(model, held_out, 20, seed=1) <= 0.10
    assert bench.subsample_rate(model, shifted, 20, seed=1) == 1.0


def test_a_run_of_every_cell_is_the_whole_split_every_time() -> None:
    bench = _bench()
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 50)
    model = fit_drift(rng.normal(size=(100, 6)) + labels[:, None], labels, rng.normal(size=(80, 6)), dims=4)
    scores = model.score(rng.normal(size=(30, 6)))
    whole = float(model.summarize(list(scores))["warning"])
    assert bench.subsample_rate(model, scores, 30, seed=2) == whole
