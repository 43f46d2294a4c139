"""The drift model (numpy): shifted features score high, thresholds come from validation, the file is plain arrays."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sperm_edge.drift import DriftModel, fit_drift
from sperm_edge.errors import SpermEdgeError


def _features(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes in 64 dims whose means differ along a few axes; `shift` moves every feature."""
    labels = rng.integers(0, 3, n)
    centres = np.zeros((3, 64))
    centres[np.arange(3), np.arange(3)] = 4.0
    return centres[labels] + rng.standard_normal((n, 64)) + shift, labels


@pytest.fixture
def model() -> DriftModel:
    rng = np.random.default_rng(0)
    train, labels = _features(rng, 300)
    val, _ = _features(rng, 200)
    return fit_drift(train, labels, val, dims=16)


def test_shifted_features_score_above_the_validation_threshold(model) -> None:
    rng = np.random.default_rng(1)
    same, _ = _features(rng, 400)
    shifted, _ = _features(rng, 400, shift=1.5)
    same_scores, shifted_scores = model.score(same), model.score(shifted)
    assert 0.01 < np.mean(same_scores > model.threshold) < 0.12  # ~5% by construction on validation
    assert np.mean(shifted_scores > model.threshold) > 0.9
    assert model.threshold == pytest.approx(np.quantile(model.val_scores, 0.95))


def test_run_rule_warns_on_a_shifted_run_only(model) -> None:
    rng = np.random.default_rng(2)
    same, shifted = model.score(_features(rng, 200)[0]), model.score(_features(rng, 200, 1.5)[0])
    quiet, loud = model.summarize(list(same)), model.summarize(list(shifted))
    assert quiet["warning"] is False and loud["warning"] is True
    assert set(loud) >= {"score", "share_out", "threshold", "warning"} and loud["n"] == 200
    assert loud["p_value"] < 0.05 <= quiet["p_value"] and loud["validation_score"] == quiet["validation_score"]
    slight = model.score(_features(rng, 500, 0.3)[0])  # a slight shift: a long run shows it, a short one may not
    assert model.run_p_value(slight[:20]) > model.run_p_value(slight)
    assert model.run_warns(np.stack([shifted[:20], same[:20]])).tolist() == [True, False]  # runs stack on axis 0
    few = model.summarize(list(shifted[:3]))
    assert few["warning"] is False and "no run-level verdict" in few["note"]
    assert model.summarize([])["score"] is None


def test_run_p_value_is_the_one_sided_mann_whitney_test(model) -> None:
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(4)
    for shift, n in ((0.0, 20), (0.4, 50), (1.5, 8)):
        run = model.score(_features(rng, n, shift)[0])
        expected = mannwhitneyu(run, model.val_scores, alternative="greater", method="asymptotic").pvalue
        assert float(model.run_p_value(run)) == pytest.approx(expected, rel=1e-9)


def test_in_distribution_runs_rarely_warn(model) -> None:
    """The run rule's false-alarm rate on fresh in-distribution runs of 100 cells is about 5% (or less)."""
    rng = np.random.default_rng(3)
    alarms = [model.summarize(list(model.score(_features(rng, 100)[0])))["warning"] for _ in range(100)]
    assert np.mean(alarms) <= 0.12


def test_field_runs_warn_only_when_far_more_heads_than_tolerated_lie_beyond_the_field_threshold() -> None:
    from scipy.stats import binomtest

    from sperm_edge.drift import FIELD_TOLERATED_SHARE
    from sperm_edge.runtime.drift import run_drift

    rng = np.random.default_rng(5)
    train, labels = _features(rng, 300)
    val, _ = _features(rng, 100)
    field = np.concatenate([_features(rng, 100, 0.3)[0] for _ in range(4)])  # 4 views of 100 crops, a bit apart
    model = fit_drift(train, labels, val, dims=16, field_val=field, views=4)
    assert model.field_threshold != model.threshold and model.set_aside_threshold == max(model.field_val_scores)
    gate = model.field_threshold
    for share, warns in ((0.3, False), (FIELD_TOLERATED_SHARE, False), (0.9, True)):
        k = round(40 * share)
        scores = [gate * 1.5] * k + [gate * 0.5] * (40 - k)
        verdict = model.summarize(scores, field=True)
        assert verdict["warning"] is warns and verdict["rule"] == "field-share"
        assert verdict["p_value"] == pytest.approx(binomtest(k, 40, FIELD_TOLERATED_SHARE, "greater").pvalue, rel=1e-3)
        assert model.summarize(scores)["rule"] == "rank"  # crop mode keeps the rank test
    # what the head verifier set aside is not a head: it does not count towards the verdict
    events = [{"drift_score": gate * 0.5}] * 20 + [{"drift_score": gate * 3, "reason": "not_a_head"}] * 20
    verdict = run_drift(model, events, "field")
    assert verdict["n"] == 20 and verdict["warning"] is False and verdict["tolerated_share"] == FIELD_TOLERATED_SHARE
    # a drift file written before field mode had its own reference: field mode falls back on the crops as they are
    model.field_val_scores = None
    assert model.field_threshold == model.threshold


def test_file_round_trips_as_plain_arrays(model, tmp_path) -> None:
    path = model.save(tmp_path / "drift.npz")  # no field reference: a file as export wrote it before
    again = DriftModel.load(path)
    assert again.field_val_scores is None
    features = _features(np.random.default_rng(4), 10)[0]
    np.testing.assert_allclose(again.score(features), model.score(features))
    assert again.threshold == pytest.approx(model.threshold) and again.dims == 16


def test_a_pickled_or_incomplete_file_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.array([object()], dtype=object))
    with pytest.raises(SpermEdgeError, match="drift file .* unreadable or incomplete"):
        DriftModel.load(bad)
    evil = tmp_path / "evil.npz"
    evil.write_bytes(pickle.dumps({"mean": 1}))
    with pytest.raises(SpermEdgeError, match="unreadable or incomplete"):
        DriftModel.load(evil)


def test_bad_inputs_are_refused(model) -> None:
    with pytest.raises(SpermEdgeError, match="do not fit the model's 64 channels"):
        model.score(np.zeros((2, 8)))
    with pytest.raises(SpermEdgeError, match="need validation features"):
        fit_drift(np.zeros((4, 8)), [0, 0, 1, 1], np.zeros((0, 8)))
