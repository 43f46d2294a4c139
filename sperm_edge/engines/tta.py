"""Dihedral test-time augmentation around any backend: each crop is classified in its 8 orientations.

A head has no canonical orientation, yet a single-view classifier changes its answer for some
cells when they are merely turned (a SMIDS bundle, on its validation crops turned by a random
angle: 8.6% of answers, 4.0% with these views; `benchmarks/crop_agreement.py`).

`DihedralTTA` wraps an engine: `infer` runs the 8 rotations and mirror images of each crop
(`sperm_edge.tta`, the views training scores with), averages the logits, and keeps the `cam` and
`features` of the crop as it is (view 0), so explanations point at the unturned crop and the
drift model, fitted on single views, still applies. The temperature applies to the averaged
logits, as in training's TTA scores. It costs 8 inferences per cell.
"""

from __future__ import annotations

import numpy as np

from sperm_edge.engines.base import Backend, InputSpec, Outputs
from sperm_edge.tta import VIEWS, dihedral_views, mean_over_views


class DihedralTTA(Backend):
    """`inner` run on the 8 dihedral views of every crop; logits averaged, cam and features of view 0."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.precision)
        self.inner = inner
        self.name = f"{inner.name}+tta"

    def _activate_impl(self) -> InputSpec:
        self.inner.__enter__()
        self.output_names = self.inner.output_names
        return self.inner.input_spec

    def _deactivate_impl(self) -> None:
        self.inner.__exit__(None, None, None)

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        n = len(batch)
        views = dihedral_views(batch)
        step = self.inner.input_spec.max_batch or len(views)
        parts = [self.inner.infer(views[i : i + step]) for i in range(0, len(views), step)]
        logits = mean_over_views(np.concatenate([p.logits for p in parts]))
        first = parts[: -(-n // step)]  # the parts holding view 0 (the crops as they are)
        cam = np.concatenate([p.cam for p in first])[:n] if parts[0].cam is not None else None
        features = np.concatenate([p.features for p in first])[:n] if parts[0].features is not None else None
        return Outputs(logits.astype(np.float32), cam, features)

    def describe(self) -> dict:
        return {**self.inner.describe(), "tta": f"dihedral, {VIEWS} views"}
