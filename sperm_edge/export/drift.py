"""The bundle's drift description (`sperm_edge.drift`): fitted on the FP32 ONNX model's pooled features.

Features of the checkpoint's TRAINING split fit the model; those of its VALIDATION split set the
thresholds. Written as `drift.npz` with a `drift` section in the manifest. Without a recorded
split (or a model without a `features` output) the bundle has no drift file and the manifest
says why; the runtime then reports no drift check.

The training crops are described as they are (crop mode's cells are such crops) and as field mode
shows them to the network (issue 31: described only as they are, the training lab's own cells cut
from a field warned of drift); the validation crops give each mode its own thresholds. Field mode's
view of a crop: turned by a random angle about its centre (HuSHeM's crops all point one way, a
field's heads any way: on real-crop clips the turn was the largest single part of the gap between
field cells and validation crops), laid on its glass and cut by the runtime's localiser at the
bundle's crop scale, other heads painted out (`export.framing.field_cut`; a crop where the localiser
finds no head at the centre, such as SMIDS' `Non-Sperm`, as it is), in 8 views (each its own angle,
then the dihedral view field mode turns that frame's crops to, `rolling_views`). A validation crop's
field score is the median over its views, as a run's cell's is the median over its sightings. The
angles come from a fixed seed: an export is repeatable.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from sperm_edge.drift import DRIFT_FILE, fit_drift
from sperm_edge.engines.ort import new_session
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.bundle_writer import BundleWriter
from sperm_edge.export.framing import field_cut
from sperm_edge.export.images import split_images
from sperm_edge.export.ort_cpu import ort_outputs
from sperm_edge.localize import LocalizerConfig, background_colour
from sperm_edge.preprocess import PreprocessSpec
from sperm_edge.tta import VIEWS

log = logging.getLogger(__name__)


def field_views(images: list[np.ndarray], cfg: LocalizerConfig, seed: int = 0) -> tuple[list[np.ndarray], int]:
    """Every crop as field mode cuts it in 8 views (view-major: all crops in view 0, then view 1...), each view
    turned by its own random angle, and how many crops had no head at their centre for the localiser in their
    first view (those views keep the turned crop as it is)."""
    rng = np.random.default_rng(seed)
    views, unframed = [], 0
    for view in range(VIEWS):
        for image in images:
            turned = turn(image, float(rng.uniform(0.0, 360.0)))
            cut = field_cut(turned, cfg)
            unframed += int(cut is None and view == 0)
            views.append(np.ascontiguousarray(_view(turned if cut is None else cut, view)))
    return views, unframed


def turn(rgb: np.ndarray, angle: float) -> np.ndarray:
    """The crop turned by `angle` degrees about its centre, the corners it uncovers filled with its glass."""
    h, w = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    glass = [float(v) for v in background_colour(rgb)]
    return cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=glass)  # fmt: skip


def _view(rgb: np.ndarray, view: int) -> np.ndarray:
    """An (h, w, 3) image in dihedral view `view` (`tta.dihedral_view`'s turns and mirror, which takes only square
    images: a crop where no head was found keeps its own shape)."""
    turned = np.rot90(rgb, view % 4, (0, 1))
    return turned[:, ::-1] if view >= 4 else turned


def add_drift(
    writer: BundleWriter,
    onnx_file: str,
    meta: dict,
    classes: list[str],
    spec: PreprocessSpec,
    framing: dict | None = None,
) -> dict:
    """Fit and write the drift file into the bundle (crops framed as field mode frames them with the bundle's
    `framing`); return the manifest's `drift` section."""
    session = new_session(writer.path(onnx_file))
    if "features" not in [o.name for o in session.get_outputs()]:
        return _unavailable(writer, "the ONNX model has no `features` output")
    try:
        train = split_images(meta, "train", classes)
        val = split_images(meta, "val", classes)
    except SpermEdgeError as err:
        return _unavailable(writer, f"{err} (the drift model is fitted on the training split)")
    cfg = LocalizerConfig.framed(framing)
    train_views, train_unframed = field_views(train.images, cfg)
    val_views, val_unframed = field_views(val.images, cfg)
    train_features = np.concatenate([ort_outputs(session, train.images, spec)["features"],
                                     ort_outputs(session, train_views, spec)["features"]])  # fmt: skip
    labels = np.concatenate([np.asarray(train.labels), np.tile(train.labels, VIEWS)])
    val_features = ort_outputs(session, val.images, spec)["features"]
    field_val = ort_outputs(session, val_views, spec)["features"]
    model = fit_drift(train_features, labels, val_features, field_val=field_val, views=VIEWS)
    model.save(writer.path(DRIFT_FILE))
    writer.add_file(DRIFT_FILE)
    section = {
        **model.describe(),
        "framing": {"crops": "turned by a random angle, cut as field mode cuts them", "crop_scale": cfg.crop_scale,
                    "isolate": cfg.isolate, "views": VIEWS, "validation_score": "median over the views"},
        "fitted_on": {"source": train.source, "n": len(train), "no_head_found": train_unframed},
        "thresholds_on": {"source": val.source, "n": len(val), "no_head_found": val_unframed},
    }  # fmt: skip
    writer.manifest["drift"] = section
    log.info("drift model: %d features -> %d dims, cell threshold %.3f", section["features"], section["dims"],
             section["cell_threshold"])  # fmt: skip
    return section


def _unavailable(writer: BundleWriter, reason: str) -> dict:
    log.warning("no drift description in the bundle: %s", reason)
    section = {"available": False, "reason": reason}
    writer.manifest["drift"] = section
    return section
