"""How far a bundle's heatmaps can be trusted, measured at export on validation crops.

The maps are the engine's own (`cam` output of the FP32 ONNX model on ONNX Runtime, the predicted
class, laid over the crop as `sperm-edge run --explain` draws it). Head masks are the synthetic
generator's (`_masks/` beside a generated set) or else the stained head (`explain.scores.head_masks`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.engines.ort import new_session
from sperm_edge.explain.engine import engine_explanation
from sperm_edge.explain.scores import MASKS_DIR, head_masks, localisation_scores
from sperm_edge.export.images import ImageSet
from sperm_edge.export.ort_cpu import ort_outputs
from sperm_edge.metrics import softmax
from sperm_edge.preprocess import PreprocessSpec

log = logging.getLogger(__name__)


def _masks(crops: ImageSet, root: Path, classes: list[str]) -> tuple[list[np.ndarray | None], str]:
    generated = [root / MASKS_DIR / rel for rel in crops.paths]
    if generated and all(path.is_file() for path in generated):
        masks = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127 for path in generated]
        return [m if m.any() else None for m in masks], "the synthetic generator's head masks"
    return head_masks(crops.images, crops.labels, classes), "stained heads (explain.scores.stain_head_mask)"


def measure_explain_quality(
    model_path: Path, crops: ImageSet, root: Path, spec: PreprocessSpec, classes: list[str], layer: str
) -> dict | None:
    """The `explain` section's quality figures: pointing game and heat share on the head beside a centred blob
    as spread as the maps; None when no crop has a head to measure on."""
    outputs = ort_outputs(new_session(model_path), crops.images, spec)
    maps = [
        engine_explanation(rgb, cam, probs, classes, spec.img_size, layer).cam
        for rgb, cam, probs in zip(crops.images, outputs["cam"], softmax(outputs["logits"]), strict=True)
    ]
    masks, source = _masks(crops, root, classes)
    scores = localisation_scores(maps, masks)
    if scores is None:
        log.warning("no head mask in %s: the bundle records no explanation quality", crops.source)
        return None
    return {
        "pointing": scores["pointing"]["mean"],
        "heat_share": scores["heat_share"]["mean"],
        "heat_share_centre_matched": scores["heat_share_centre_matched"]["mean"],
        "quality": {**scores, "crops": len(crops), "images": crops.source, "masks": source},
    }
