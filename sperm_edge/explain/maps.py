"""Heatmaps as numbers, without torch: pytorch-grad-cam's post-processing, the explanation record, heat statistics.

An engine's `cam` output is Grad-CAM++ on the feature grid, after its ReLU (see
`sperm_edge.model.cam_head`). `input_map` turns one class's grid into the map pytorch-grad-cam
returns for that class (`BaseCAM.compute_cam_per_layer` then `aggregate_multi_layers`): min-max
normalise, resize to the network input with `cv2.resize` (bilinear), clip at 0, min-max
normalise again. `cam_to_image` then maps it onto the crop (undoing pad-to-square).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

METHOD = "Grad-CAM++"
SOURCES = ("engine", "torch")
_NORM_EPS = 1e-7  # pytorch_grad_cam.utils.image.scale_cam_image


def normalise(cam: np.ndarray) -> np.ndarray:
    """Min-max normalisation exactly as pytorch-grad-cam's `scale_cam_image` (float32)."""
    cam = cam.astype(np.float32) - np.float32(cam.min())
    return cam / (np.float32(_NORM_EPS) + cam.max())


def input_map(grid: np.ndarray, img_size: int) -> np.ndarray:
    """One class's Grad-CAM++ on the feature grid (H x W) -> pytorch-grad-cam's map at the input size."""
    scaled = cv2.resize(normalise(grid), (img_size, img_size))
    return normalise(np.maximum(scaled, 0.0))


def cam_to_image(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Undo the preprocessing's pad-to-square and resize: map a network-sized heatmap onto the crop."""
    h, w = shape
    side = max(h, w)
    square = cv2.resize(cam.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    top, left = (side - h) // 2, (side - w) // 2
    return np.clip(square[top : top + h, left : left + w], 0.0, 1.0)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (1.0 when both are constant and equal, 0.0 when one only is constant)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den == 0.0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float((a * b).sum() / den)


@dataclass
class Explanation:
    """A heatmap over a crop (float32 in [0, 1], the crop's height x width) and what it explains."""

    cam: np.ndarray
    target: int
    target_class: str
    probs: np.ndarray
    classes: list[str]
    layer: str
    latency_ms: float
    stats: dict = field(default_factory=dict)
    input_cam: np.ndarray | None = None  # the heatmap at the network's input size (for faithfulness metrics)
    source: str = "torch"  # "engine": from the inference engine's `cam` output; "torch": pytorch-grad-cam
    method: str = METHOD

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def score(self) -> float:
        """Probability of the explained class."""
        return float(self.probs[self.target])

    def to_dict(self) -> dict:
        return {
            "class": self.classes[self.predicted],
            "score": round(float(self.probs[self.predicted]), 6),
            "explained_class": self.target_class,
            "explained_score": round(self.score, 6),
            "probs": {c: round(float(p), 6) for c, p in zip(self.classes, self.probs, strict=True)},
            "method": self.method,
            "source": self.source,
            "layer": self.layer,
            "latency_ms": round(self.latency_ms, 2),
            "heat": self.stats,
        }


def heat_statistics(cam: np.ndarray) -> dict:
    """Where the heat is: peak and centroid (fractions of width/height), spread and central share."""
    h, w = cam.shape
    total = float(cam.sum())
    py, px = np.unravel_index(int(np.argmax(cam)), cam.shape)
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = (float((ys * cam).sum() / total), float((xs * cam).sum() / total)) if total > 0 else (h / 2, w / 2)
    centre = cam[h // 4 : h - h // 4, w // 4 : w - w // 4]
    return {
        "peak": [round(float(px + 0.5) / w, 4), round(float(py + 0.5) / h, 4)],
        "centroid": [round((cx + 0.5) / w, 4), round((cy + 0.5) / h, 4)],
        "mean": round(float(cam.mean()), 4),
        "area_above_half": round(float((cam >= 0.5).mean()), 4),
        "central_share": round(float(centre.sum()) / total, 4) if total > 0 else 0.0,
    }
