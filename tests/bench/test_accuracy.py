"""The labelled set seen through the bundle's preprocessing, its recorded splits, and the row figures."""

from __future__ import annotations

import numpy as np
import pytest

from sperm_edge.bench.accuracy import EvalSet, load_eval_set, predict, score
from sperm_edge.bundle import load_bundle
from sperm_edge.engines.base import Outputs
from sperm_edge.errors import SpermEdgeError
from tests.bench.conftest import IMG_SIZE
from tests.conftest import write_tiny_folder


def test_the_folder_is_preprocessed_in_the_bundle_class_order(tiny_bundle, bench_data) -> None:
    eval_set = load_eval_set(bench_data, load_bundle(tiny_bundle))
    assert eval_set.inputs.shape == (12, 3, IMG_SIZE, IMG_SIZE)
    assert eval_set.inputs.dtype == np.float32
    assert eval_set.classes == ["alpha", "beta", "gamma"]
    assert sorted(set(eval_set.labels.tolist())) == [0, 1, 2]


def test_a_recorded_split_keeps_only_its_images(tiny_bundle, bench_data) -> None:
    eval_set = load_eval_set(bench_data, load_bundle(tiny_bundle), split="test")
    assert len(eval_set.labels) == 6  # the fixture records every other image as the test split
    with pytest.raises(SpermEdgeError, match="records no train split"):
        load_eval_set(bench_data, load_bundle(tiny_bundle), split="train")
    with pytest.raises(SpermEdgeError, match="unknown split 'holdout'"):
        load_eval_set(bench_data, load_bundle(tiny_bundle), split="holdout")


def test_a_folder_with_classes_the_model_does_not_know_is_refused(tiny_bundle, tmp_path) -> None:
    other = write_tiny_folder(tmp_path / "other", classes=("alpha", "delta"), per_class=2)
    with pytest.raises(SpermEdgeError, match="does not know"):
        load_eval_set(other, load_bundle(tiny_bundle))


def test_score_reports_accuracy_and_agreement_with_the_reference() -> None:
    eval_set = EvalSet(np.zeros((4, 3, 2, 2), np.float32), np.array([0, 1, 2, 0]), ["a", "b", "c"], None, "all")
    reference = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]] * 5
    worse = reference.copy()
    worse[3] = [0, 5, 0]
    assert score(reference, eval_set, reference) == {
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "n_images": 4,
        "agreement": 1.0,
        "max_abs_diff": 0.0,
    }
    row = score(worse, eval_set, reference)
    assert row["accuracy"] == 0.75 and row["agreement"] == 0.75 and row["max_abs_diff"] == 5.0
    assert "agreement" not in score(worse, eval_set, None)


def test_predict_batches_the_inputs() -> None:
    seen = []

    class Echo:
        def infer(self, batch):
            seen.append(len(batch))
            return Outputs(batch[:, :2, 0, 0])

    inputs = np.random.default_rng(0).standard_normal((7, 3, 2, 2)).astype(np.float32)
    logits = predict(Echo(), inputs, batch=3)
    assert seen == [3, 3, 1]
    np.testing.assert_array_equal(logits, inputs[:, :2, 0, 0])
