"""Export writes the drift model from the FP32 model's features of the crops as field mode cuts them: fitted on
training, thresholds on validation."""

from __future__ import annotations

import json

import numpy as np

from sperm_edge.bundle import load_bundle
from sperm_edge.drift import DRIFT_FILE
from sperm_edge.engines.ort import new_session
from sperm_edge.export.drift import field_views
from sperm_edge.export.images import split_images
from sperm_edge.export.ort_cpu import ort_outputs
from sperm_edge.localize import LocalizerConfig
from sperm_edge.tta import VIEWS


def test_export_fits_the_drift_model_on_the_training_split(tiny_bundle, tiny_run) -> None:
    bundle = load_bundle(tiny_bundle)
    section = bundle.manifest["drift"]
    meta = json.loads((tiny_run / "best.json").read_text())
    train, val = (split_images(meta, part, bundle.card.classes) for part in ("train", "val"))
    assert section["file"] == DRIFT_FILE and DRIFT_FILE in bundle.manifest["files"]
    assert section["fitted_on"]["n"] == len(train) and section["thresholds_on"]["n"] == len(val)
    assert section["fitted_on"]["source"].startswith("train split")
    assert section["thresholds_on"]["source"].startswith("val split")
    assert {"method", "dims", "cell_threshold", "cell_threshold_rule", "run_rule"} <= set(section)
    model = bundle.drift_model()
    assert len(model.val_scores) == len(val) and len(model.field_val_scores) == len(val)
    assert np.isclose(model.threshold, section["cell_threshold"], atol=1e-4)
    framing = section["framing"]
    assert framing["views"] == VIEWS and framing["crop_scale"] == bundle.card.framing["crop_scale"]
    # the stored validation scores are what the bundle's own FP32 model gives those crops as field mode cuts them,
    # the median over the 8 views
    views, unframed = field_views(val.images, LocalizerConfig.framed(bundle.card.framing))
    assert len(views) == VIEWS * len(val) and unframed == section["thresholds_on"]["no_head_found"] < len(val)
    features = ort_outputs(new_session(bundle.onnx_path("fp32")), views, bundle.card.preprocess)["features"]
    scores = np.median(model.score(features).reshape(VIEWS, -1), axis=0)
    np.testing.assert_allclose(scores, model.field_val_scores, rtol=1e-4, atol=1e-4)
    assert np.isclose(model.field_threshold, section["field_cell_threshold"], atol=1e-4)
    # crop mode's thresholds come from the crops as they are
    raw = ort_outputs(new_session(bundle.onnx_path("fp32")), val.images, bundle.card.preprocess)["features"]
    np.testing.assert_allclose(model.score(raw), model.val_scores, rtol=1e-4, atol=1e-4)
