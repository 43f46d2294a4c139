"""Explanations from inference engines: no torch, no backward pass, no worker.

Two engine-side sources, both closed forms proven equal to pytorch-grad-cam at export:

- the classifier's own `cam` output: Grad-CAM++ of every class on the last feature grid
  (`sperm_edge.model.cam_head`), free with every inference; `engine_explanation` turns one class's
  grid into an `Explanation`;
- the bundle's explainer model (`explain.onnx`, `sperm_edge.model.layer_cam`): LayerCAM of one asked
  class on a finer grid, one extra pass (about twice a classification) run only for the cells that are
  explained; `ExplainerModel` runs it on ONNX Runtime.

Either way the map is laid over the crop as pytorch-grad-cam would (`maps.input_map`), with
`source: "engine"`, ready for `overlay.write_explanation`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sperm_edge.explain.maps import Explanation, cam_to_image, heat_statistics, input_map
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch


def grid_explanation(
    crop: np.ndarray,
    grid: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    img_size: int,
    layer: str,
    target: int,
    method: str = "Grad-CAM++",
    started: float | None = None,
) -> Explanation:
    """The explanation of `crop` (RGB) from one class's raw map on a feature grid (Hf x Wf)."""
    start = time.perf_counter() if started is None else started
    at_input = input_map(grid, img_size)
    heat = cam_to_image(at_input, crop.shape[:2])
    return Explanation(
        heat,
        int(target),
        classes[int(target)],
        np.asarray(probs, dtype=np.float32),
        list(classes),
        layer,
        (time.perf_counter() - start) * 1000.0,
        heat_statistics(heat),
        input_cam=at_input,
        source="engine",
        method=method,
    )


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
    return grid_explanation(crop, cam[index], probs, classes, img_size, layer, index, started=start)


class ExplainerModel:
    """A bundle's LayerCAM explainer (`explain.onnx`) on ONNX Runtime: crops and classes in, maps out.

    Its inputs are `input` (N x 3 x S x S, preprocessed as the classifier's) and `target` (N, int64);
    its outputs `logits` and `cam` (N x h x w, the asked class's raw LayerCAM).
    """

    method = "LayerCAM"

    def __init__(self, path: str | Path, spec: PreprocessSpec, layer: str, threads: int | None = None) -> None:
        from sperm_edge.engines.ort import new_session

        self.path, self.spec, self.layer = Path(path), spec, layer
        self.session = new_session(self.path, threads=threads, name="explainer")

    def grids(self, crops: Sequence[np.ndarray], targets: Sequence[int], batch: int = 16, view: int = 0) -> np.ndarray:
        """Raw maps (N x h x w, float32) of RGB crops for one class each; `view`: the dihedral view
        (`sperm_edge.tta`) the network sees the crops in, each map turned back onto its crop."""
        from sperm_edge.tta import dihedral_view, undo_dihedral_view

        parts = []
        for start in range(0, len(crops), batch):
            images = dihedral_view(preprocess_batch(crops[start : start + batch], self.spec), view)
            feeds = {
                "input": np.ascontiguousarray(images),
                "target": np.asarray(targets[start : start + batch], dtype=np.int64),
            }
            parts.append(undo_dihedral_view(self.session.run(["cam"], feeds)[0], view))
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0, 0), np.float32)

    def explain(
        self, crop: np.ndarray, probs: np.ndarray, classes: Sequence[str], target: int | None = None, view: int = 0
    ) -> Explanation:
        """The explanation of one RGB crop for `target` (default: the top class of `probs`, the classifier's)."""
        start = time.perf_counter()
        index = int(np.argmax(probs)) if target is None else int(target)
        grid = np.ascontiguousarray(self.grids([crop], [index], view=view)[0])
        return grid_explanation(
            crop, grid, probs, classes, self.spec.img_size, self.layer, index, self.method, started=start
        )
