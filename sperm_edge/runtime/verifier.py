"""The bundle's head verifier at run time: is a field cell one sperm head, before it is counted?

`HeadVerifier` runs the bundle's verifier (`verifier.onnx`, or its INT8 model where export shipped it;
see `sperm_edge.export.verifier`) on ONNX Runtime with one thread, on the crop of each track's reported
sighting: one small inference per counted cell, not per frame. A cell whose P(head) is below the bundle's
threshold (chosen on the verifier's validation split) is set aside with reason `not_a_head` instead of
counted; every event records its score.
"""

from __future__ import annotations

import numpy as np

from sperm_edge.bundle import Bundle
from sperm_edge.metrics import softmax
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch

NOT_A_HEAD = "not_a_head"  # the flag and set-aside reason of a cell the verifier rejects


class HeadVerifier:
    """P(one sperm head) of RGB crops, and the threshold below which a cell is not counted."""

    def __init__(self, bundle: Bundle, section: dict, threads: int = 1) -> None:
        from sperm_edge.engines.ort import new_session

        self.threshold = float(section["threshold"])
        self.spec = PreprocessSpec.from_dict(section["preprocess"])
        self.head = list(section["classes"]).index(section["head_class"])
        self.session = new_session(bundle.file(section["file"]), threads=threads, name="verifier")
        self.input = self.session.get_inputs()[0].name

    def score(self, crop: np.ndarray) -> float:
        """P(head) of one RGB crop."""
        logits = self.session.run(["logits"], {self.input: preprocess_batch([crop], self.spec)})[0]
        return float(softmax(logits)[0, self.head])

    def describe(self) -> dict:
        return {"threshold": round(self.threshold, 6), "input_size": self.spec.img_size}


def bundle_verifier(bundle: Bundle) -> HeadVerifier | None:
    """The bundle's head verifier, or None when it ships none (a report then says debris may be counted)."""
    section = bundle.manifest.get("verifier")
    return HeadVerifier(bundle, section) if section else None
