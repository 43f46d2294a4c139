"""Boxes against a clip's ground truth (the synthetic and real-cell fields list every head's box per frame).

A box matches the ground-truth cell whose box contains its centre (a few pixels of tolerance); the largest
overlap wins when two do. The run's scoring (`runtime.scoring`) and the verifier's field objects
(`data.verifier_set`) match the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

TOLERANCE = 3


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_box(box: Sequence[float], cells: Iterable[dict], tolerance: float = TOLERANCE) -> dict | None:
    """The ground-truth cell (with `box` as x0, y0, x1, y1) that `box` (same form) lies on, if any."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    t = tolerance
    hits = [c for c in cells if c["box"][0] - t <= cx <= c["box"][2] + t and c["box"][1] - t <= cy <= c["box"][3] + t]
    return max(hits, key=lambda c: box_iou(box, c["box"])) if hits else None
