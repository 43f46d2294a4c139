"""Which heatmaps a bundle draws, and how far they can be trusted: measured at export on validation crops.

Candidates, each laid over the crop for the class the classifier predicts, as `sperm-edge run --explain`
draws it: the classifier's `cam` output (Grad-CAM++ on the last grid, free with every inference) and the
LayerCAM explainer (`explain.onnx`, `sperm_edge.model.layer_cam`) on each 14 x 14 block stage whose
closed form matches pytorch-grad-cam. Each is scored on the validation crops' heads (pointing game, heat
share beside a centred blob as spread as the maps; `explain.scores.localisation_scores`) and the
one nearest to both of issue 37's bars (`explain.scores.closeness`) is drawn. Head masks are the
synthetic generator's (`_masks/` beside a generated set) or else the stained head.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.explain.engine import ExplainerModel, engine_explanation
from sperm_edge.explain.maps import cam_to_image, input_map
from sperm_edge.explain.scores import MASKS_DIR, head_masks, localisation_scores
from sperm_edge.export.images import ImageSet
from sperm_edge.metrics import softmax

log = logging.getLogger(__name__)


def crop_masks(crops: ImageSet, root: Path, classes: list[str]) -> tuple[list[np.ndarray | None], str]:
    """Each crop's head mask (None where it has no head) and where the masks come from."""
    generated = [root / MASKS_DIR / rel for rel in crops.paths]
    if generated and all(path.is_file() for path in generated):
        masks = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127 for path in generated]
        return [m if m.any() else None for m in masks], "the synthetic generator's head masks"
    return head_masks(crops.images, crops.labels, classes), "stained heads (explain.scores.stain_head_mask)"


def cam_output_maps(
    crops: ImageSet, outputs: dict[str, np.ndarray], classes: list[str], img_size: int, layer: str
) -> list[np.ndarray]:
    """The classifier's `cam` output over each crop, for its predicted class."""
    return [
        engine_explanation(rgb, cam, probs, classes, img_size, layer).cam
        for rgb, cam, probs in zip(crops.images, outputs["cam"], softmax(outputs["logits"]), strict=True)
    ]


def explainer_maps(explainer: ExplainerModel, crops: ImageSet, targets: Sequence[int]) -> list[np.ndarray]:
    """The explainer's maps over each crop, for the given classes."""
    grids = explainer.grids(crops.images, targets)
    size = explainer.spec.img_size
    return [cam_to_image(input_map(grid, size), rgb.shape[:2]) for rgb, grid in zip(crops.images, grids, strict=True)]


def ms_per_cell(explainer: ExplainerModel, crop: np.ndarray, runs: int = 10) -> float:
    """Median wall time of one crop's explanation (preprocessing, the explainer, the map over the crop)."""
    probs = np.ones(1, np.float32)
    explainer.explain(crop, probs, ["0"], 0)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        explainer.explain(crop, probs, ["0"], 0)
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 2)


def quality(maps: list[np.ndarray], masks: list[np.ndarray | None], crops: ImageSet, source: str) -> dict | None:
    """The manifest's figures for one set of maps; None when no crop has a head to measure on."""
    scores = localisation_scores(maps, masks)
    if scores is None:
        return None
    return {
        "pointing": scores["pointing"]["mean"],
        "heat_share": scores["heat_share"]["mean"],
        "heat_share_centre_matched": scores["heat_share_centre_matched"]["mean"],
        "ratio": scores["ratio"],
        "quality": {**scores, "crops": len(crops), "images": crops.source, "masks": source},
    }
