"""Temperature scaling: the fit recovers a known temperature, never changes a prediction, refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

from sperm_edge.calibration import calibrated_probs, fit_temperature, nll
from sperm_edge.errors import SpermEdgeError
from sperm_edge.metrics import expected_calibration_error, softmax


def _overconfident(n: int = 4000, classes: int = 4, true_t: float = 2.5, seed: int = 0):
    """Labels drawn from softmax(z); the 'model' reports z * true_t, so T = true_t calibrates it exactly."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    p = softmax(z)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return z * true_t, labels


def test_fit_recovers_the_temperature_and_lowers_ece() -> None:
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.08)
    assert nll(logits, labels, t) < min(nll(logits, labels, 1.0), nll(logits, labels, t * 1.2))
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(calibrated_probs(logits, t), labels)
    assert after < 0.03 < before


def test_calibration_never_changes_the_predicted_class() -> None:
    logits, _ = _overconfident(n=200)
    for t in (0.3, 1.0, 4.0):
        probs = calibrated_probs(logits, t)
        assert (probs.argmax(axis=1) == logits.argmax(axis=1)).all()
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_bad_input_is_refused() -> None:
    with pytest.raises(SpermEdgeError, match="N x K logits and N labels"):
        fit_temperature(np.zeros((3, 2)), [0, 1])
    with pytest.raises(SpermEdgeError, match="temperature must be positive"):
        calibrated_probs(np.zeros((1, 2)), 0.0)


def _golden_section_temperature(logits, labels, tol: float = 1e-4) -> float:
    """The hand-written search `fit_temperature` used before scipy's (kept here as the reference it must equal)."""
    from sperm_edge.calibration import LOG_T_RANGE

    lo, hi = LOG_T_RANGE
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2.0))


def test_scipys_bounded_search_finds_the_same_temperature_as_the_golden_section_it_replaced() -> None:
    rng, compared = np.random.default_rng(7), 0
    for trial in range(20):
        n, k = int(rng.integers(20, 400)), int(rng.integers(2, 19))
        labels = rng.integers(0, k, n)
        logits = rng.normal(0, 1, (n, k)) + rng.uniform(0, 6) * np.eye(k)[labels] * rng.uniform(0.2, 3)
        ours, reference = fit_temperature(logits, labels), _golden_section_temperature(logits, labels)
        best = nll(logits, labels, reference)
        assert nll(logits, labels, ours) <= best + 1e-8, trial  # never a worse fit
        if best > 1e-3:  # separable sets are fitted perfectly by any small T (a flat NLL of 0): no single answer
            assert abs(np.log(ours) - np.log(reference)) < 2e-4, trial  # within the searches' tolerance
            compared += 1
    assert compared >= 10
