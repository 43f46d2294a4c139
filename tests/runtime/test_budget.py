"""The per-track inference budget's rule: which sightings go to the network, when a cell is settled."""

from __future__ import annotations

import numpy as np

from sperm_edge.runtime.budget import InferenceBudget
from sperm_edge.runtime.tracking import Observation, Track
from tests.runtime.test_tracking import _det


def _track(*probs: tuple[float, ...], drift: tuple[float, ...] = ()) -> Track:
    track = Track(1, np.zeros(2), 0, 0, 20.0, np.zeros(3), np.zeros(3, dtype=np.int64))
    for i, p in enumerate(probs):
        score = drift[i] if i < len(drift) else None
        track.add(Observation(i, _det(50, 50), np.asarray(p), np.zeros((4, 4, 3), np.uint8), drift=score))
    return track


def test_a_cell_goes_to_the_network_until_settled_then_only_when_its_head_changes() -> None:
    budget, det = InferenceBudget(), _det(50, 50, area=400.0)
    track = _track((0.95, 0.03, 0.02))
    track.inferred_area = 400.0
    assert budget.needs_inference(track, det, counted_before=False, settled=False)
    assert not budget.needs_inference(track, det, counted_before=True, settled=False)  # counted: its event is out
    assert not budget.needs_inference(track, _det(50, 50, area=460.0), counted_before=False, settled=True)
    assert budget.needs_inference(track, _det(50, 50, area=560.0), counted_before=False, settled=True)  # +40%
    every = InferenceBudget("every_frame")
    assert every.needs_inference(track, det, counted_before=True, settled=True)


def test_a_cell_settles_on_confidence_or_a_clear_lead_and_a_settled_set_aside_verdict() -> None:
    sure = (0.95, 0.03, 0.02)
    torn = (0.5, 0.4, 0.1)
    leaning = (0.6, 0.3, 0.1)
    budget = InferenceBudget(settle_after=4, confidence=0.9, margin=0.2)
    assert not budget.is_settled(_track(*[sure] * 3))  # too few views yet
    assert budget.is_settled(_track(*[sure] * 4))
    assert not budget.is_settled(_track(*[leaning] * 7)) and budget.is_settled(_track(*[leaning] * 8))
    assert not budget.is_settled(_track(*[torn] * 12))  # could still flip: classified until counted
    assert not InferenceBudget(margin=None).is_settled(_track(*[leaning] * 12))
    straddling = _track(*[sure] * 4, drift=(1.0, 3.0, 1.0, 1.0))
    assert not budget.is_settled(straddling, set_aside_above=2.0) and budget.is_settled(straddling)
    assert budget.is_settled(_track(*[sure] * 4, drift=(3.0, 3.0, 2.5, 4.0)), set_aside_above=2.0)
