"""Which tracked cells the network sees in a frame: inference follows the track, not the frame.

A cell stays in view for tens of frames of a slow pan, and its class is settled long before it
leaves. Like DeepStream's secondary classifiers (which classify a tracked object until its result
is settled, then only on a re-inference interval), field mode sends a tracked cell to the network
only while it is needed:

- a cell already counted needs no more inference (its event is written; a later sighting only
  keeps it from being counted twice);
- a cell is *settled* once the network has seen it `settle_after` times (with rolling views, 4
  of the 8 dihedral views, from 4 consecutive frames) and its mean calibrated top probability is at
  least `confidence`, or once it has been seen twice as often and its mean's top class leads the
  next by at least `margin` (a cell between two classes is not made to wait for a confidence it
  will never reach, but one whose answer could still flip goes on being classified until it is
  counted); and, where field mode sets aside cells unlike the training data, only once every
  drift score of its sightings lies on the same side of that threshold (so the set-aside verdict
  is settled too);
- a settled cell is classified again when its head looks different: its area changed by more than
  `change` (relative) since the sighting last classified (it turned, came into focus, or a
  neighbour detached from it).

Crops are cut and preprocessed only for the cells that need the network, so the saving covers
preprocessing as well as inference. The pipeline decides for a frame from the tracks as classified
up to a fixed number of frames before it (its preparing stage runs that far ahead of the network),
so the same clip gives the same cells, classes and inference counts on any machine. `every_frame`
(`sperm-edge run --every-frame-inference`) classifies every cell in every frame it is seen, for
comparison. The defaults were chosen on the validation clips (seeds 0-2) of `benchmarks/field_speed.py
--select` (benchmarks/results/field_speed_select.md, and the two rounds before it, _1 and _2): of
the rules that kept every cell's class and recall and precision within 0.5 points of every-frame
inference, the one with the fewest inferences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sperm_edge.localize import Detection
from sperm_edge.runtime.tracking import Track

POLICIES = ("budget", "every_frame")


@dataclass(frozen=True)
class InferenceBudget:
    """The rule that decides whether a tracked cell goes to the network in this frame (see the module docstring)."""

    policy: str = "budget"
    settle_after: int = 4
    confidence: float = 0.8
    margin: float | None = 0.2
    change: float = 0.3

    def needs_inference(self, track: Track, detection: Detection, counted_before: bool, settled: bool) -> bool:
        """Whether this sighting of `track` goes to the network, given whether the cell was counted before this
        frame and whether its class is settled as far as the deciding frame can know."""
        if self.policy == "every_frame":
            return True
        if counted_before:
            return False
        if not settled:
            return True
        reference = max(track.inferred_area, 1e-9)
        return abs(detection.area - reference) / reference > self.change

    def is_settled(self, track: Track, set_aside_above: float | None = None) -> bool:
        """Whether the sightings classified so far settle the track's class and, with a set-aside threshold, its
        verdict (called after each one is added)."""
        if track.inferences < self.settle_after:
            return False
        if set_aside_above is not None and track.drift_scores:
            above = [score > set_aside_above for score in track.drift_scores]
            if any(above) and not all(above):
                return False
        ranked = np.sort(track.probs)[::-1]
        if ranked[0] >= self.confidence:
            return True
        lead = ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0)
        return self.margin is not None and track.inferences >= 2 * self.settle_after and lead >= self.margin
