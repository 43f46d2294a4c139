"""The bundle's head verifier at run time: is a field cell one sperm head, before it is counted?

`HeadVerifier` runs the bundle's verifier (`verifier.onnx`, or its INT8 model where export shipped it;
see `sperm_edge.export.verifier`) on ONNX Runtime with one thread, on the crops of each track's first
sightings: one small batch per counted cell, not per frame. A track keeps the verifier's thumbnail of its first
`SIGHTINGS` classified sightings, and the cell's score is their mean P(head): one crop's score moves with the
frame's noise, blur and cut. On the real-crop validation clips (seeds 0-2, every look but the held-out one,
standard-flow bundles) 3 sightings kept 12 more of 959 SMIDS heads than the single most confident sighting and
counted 2 fewer false HuSHeM heads; 5 and 8 did no better. A cell whose score is below the bundle's threshold
(chosen on the verifier's validation split) is set aside with reason `not_a_head` instead of counted; every
event records its score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sperm_edge.bundle import Bundle
from sperm_edge.metrics import softmax
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch, resize_rgb

NOT_A_HEAD = "not_a_head"  # the flag and set-aside reason of a cell the verifier rejects
SIGHTINGS = 3  # classified sightings of a track whose mean P(head) decides


class HeadVerifier:
    """P(one sperm head) of RGB crops, and the threshold below which a cell is not counted."""

    def __init__(self, bundle: Bundle, section: dict, threads: int = 1) -> None:
        from sperm_edge.engines.ort import new_session

        self.threshold = float(section["threshold"])
        self.spec = PreprocessSpec.from_dict(section["preprocess"])
        self.head = list(section["classes"]).index(section["head_class"])
        self.session = new_session(bundle.file(section["file"]), threads=threads, name="verifier")
        self.input = self.session.get_inputs()[0].name

    def thumbnail(self, crop: np.ndarray) -> np.ndarray:
        """The crop as the verifier sees it (RGB uint8 at its input size): what a track keeps of a sighting."""
        return resize_rgb(crop, self.spec)

    def score(self, crops: Sequence[np.ndarray]) -> float:
        """Mean P(head) of one cell's RGB crops or thumbnails."""
        logits = self.session.run(["logits"], {self.input: preprocess_batch(crops, self.spec)})[0]
        return float(softmax(logits)[:, self.head].mean())

    def describe(self) -> dict:
        return {"threshold": round(self.threshold, 6), "input_size": self.spec.img_size}


def bundle_verifier(bundle: Bundle) -> HeadVerifier | None:
    """The bundle's head verifier, or None when it ships none (a report then says debris may be counted)."""
    section = bundle.manifest.get("verifier")
    return HeadVerifier(bundle, section) if section else None
