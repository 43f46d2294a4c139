"""Explanations from an inference engine's own `cam` output: no torch, no backward pass, no worker.

The engine returns Grad-CAM++ of every class on the feature grid (see `sperm_edge.model.cam_head`);
this turns one class's grid into the same `Explanation` that the PyTorch path produces (heatmap
over the crop, statistics, `source: "engine"`), ready for `overlay.write_explanation`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from sperm_edge.explain.maps import Explanation, cam_to_image, heat_statistics, input_map


def engine_explanation(
    crop: np.ndarray,
    cam: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    img_size: int,
    layer: str,
    target: int | None = None,
) -> Explanation:
    """The explanation of `crop` (RGB) from its `cam` output (K x Hf x Wf) for `target` (default: the top class)."""
    start = time.perf_counter()
    index = int(np.argmax(probs)) if target is None else int(target)
    at_input = input_map(cam[index], img_size)
    heat = cam_to_image(at_input, crop.shape[:2])
    return Explanation(
        heat,
        index,
        classes[index],
        np.asarray(probs, dtype=np.float32),
        list(classes),
        layer,
        (time.perf_counter() - start) * 1000.0,
        heat_statistics(heat),
        input_cam=at_input,
        source="engine",
    )
