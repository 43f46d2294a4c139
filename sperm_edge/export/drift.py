"""The bundle's drift description (`sperm_edge.drift`): fitted on the FP32 ONNX model's pooled features.

Features of the checkpoint's TRAINING split fit the model; those of its VALIDATION split set the
thresholds. Written as `drift.npz` with a `drift` section in the manifest. Without a recorded
split (or a model without a `features` output) the bundle has no drift file and the manifest
says why; the runtime then reports no drift check.
"""

from __future__ import annotations

import logging

from sperm_edge.drift import DRIFT_FILE, fit_drift
from sperm_edge.engines.ort import new_session
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.bundle_writer import BundleWriter
from sperm_edge.export.images import split_images
from sperm_edge.export.ort_cpu import ort_outputs
from sperm_edge.preprocess import PreprocessSpec

log = logging.getLogger(__name__)


def add_drift(writer: BundleWriter, onnx_file: str, meta: dict, classes: list[str], spec: PreprocessSpec) -> dict:
    """Fit and write the drift file into the bundle; return the manifest's `drift` section."""
    session = new_session(writer.path(onnx_file))
    if "features" not in [o.name for o in session.get_outputs()]:
        return _unavailable(writer, "the ONNX model has no `features` output")
    try:
        train = split_images(meta, "train", classes)
        val = split_images(meta, "val", classes)
    except SpermEdgeError as err:
        return _unavailable(writer, f"{err} (the drift model is fitted on the training split)")
    train_features = ort_outputs(session, train.images, spec)["features"]
    val_features = ort_outputs(session, val.images, spec)["features"]
    model = fit_drift(train_features, train.labels, val_features)
    model.save(writer.path(DRIFT_FILE))
    writer.add_file(DRIFT_FILE)
    section = {**model.describe(), "fitted_on": {"source": train.source, "n": len(train)},
               "thresholds_on": {"source": val.source, "n": len(val)}}  # fmt: skip
    writer.manifest["drift"] = section
    log.info("drift model: %d features -> %d dims, cell threshold %.3f", section["features"], section["dims"],
             section["cell_threshold"])  # fmt: skip
    return section


def _unavailable(writer: BundleWriter, reason: str) -> dict:
    log.warning("no drift description in the bundle: %s", reason)
    section = {"available": False, "reason": reason}
    writer.manifest["drift"] = section
    return section
