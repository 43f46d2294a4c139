from __future__ import annotations

from pathlib import Path

import numpy as np

from sperm_edge.runtime.localize import Detection, find_cells
from sperm_edge.runtime.scoring import score_events
from sperm_edge.runtime.sources import open_source
from sperm_edge.runtime.tracking import Observation, Tracker, TrackerConfig


def _det(x: float, y: float, area: float = 400.0) -> Detection:
    box = (int(x - 10), int(y - 10), int(x + 10), int(y + 10))
    return Detection((x, y), box, box, area, 1.5, 1.0)


def _obs(frame: int, x: float, y: float, label: int = 0) -> Observation:
    probs = np.full(3, 0.1)
    probs[label] = 0.8
    return Observation(frame, _det(x, y), probs, np.zeros((4, 4, 3), np.uint8))


def test_a_cell_seen_in_many_frames_is_reported_once_when_it_leaves() -> None:
    tracker = Tracker(3, TrackerConfig(motion=False, max_missed=1))
    reported = []
    for frame in range(5):
        ids, ended = tracker.update([_obs(frame, 50 + frame, 50), _obs(frame, 120, 80, label=frame % 2)], (200, 200))
        reported += ended
        assert len(set(ids)) == 2
    for _ in range(5, 8):
        reported += tracker.update([], (200, 200))[1]
    assert len(reported) == 2
    steady, flicker = sorted(reported, key=lambda t: t.world[0])
    assert steady.n == 5 and steady.stability == 1.0 and steady.label == 0
    assert flicker.stability == 0.6  # its class changed between frames


def test_a_cell_that_comes_back_into_view_is_not_counted_again() -> None:
    tracker = Tracker(3, TrackerConfig(motion=False, max_missed=1))
    reported = []
    for frame in range(3):
        reported += tracker.update([_obs(frame, 60, 60)], (200, 200))[1]
    tracker.offset = np.array([300.0, 0.0])  # the stage moved away: the cell is out of view
    reported += tracker.update([], (200, 200))[1]
    tracker.offset = np.array([0.0, 0.0])  # ... and back
    for frame in range(5, 8):
        ids, ended = tracker.update([_obs(frame, 61, 59)], (200, 200))
        reported += ended
    reported += tracker.flush()
    assert len(reported) == 1 and ids == [reported[0].id]


def test_one_frame_blips_are_not_counted_on_a_video() -> None:
    tracker = Tracker(3, TrackerConfig(motion=False, max_missed=0, min_frames=2))
    tracker.update([_obs(0, 50, 50)], (200, 200))
    assert tracker.update([], (200, 200))[1] == [] and tracker.flush() == []


def test_each_cell_of_a_panning_clip_is_counted_once(clip: tuple[Path, dict]) -> None:
    path, truth = clip
    tracker = Tracker(4)
    events = []
    with open_source(path) as source:
        for frame in source:
            tracker.observe_motion(frame.image)
            obs = [Observation(frame.index, d, np.full(4, 0.25), np.zeros(1)) for d in find_cells(frame.image)]
            _ids, ended = tracker.update(obs, frame.image.shape[:2])
            events += [{"frame": t.best.frame_index, "box": list(t.best.detection.head_box)} for t in ended]
    events += [{"frame": t.best.frame_index, "box": list(t.best.detection.head_box)} for t in tracker.flush()]
    score = score_events(events, truth)
    assert score["cells"] >= 10
    assert score["recall"] >= 0.9 and score["double_counts"] == 0 and score["false_counts"] <= 1, score
    offset = truth["frames"][-1]["offset"]
    assert np.allclose(tracker.offset, offset, atol=3)  # the slide's motion was followed


def test_a_cell_that_stays_in_view_is_reported_after_report_after_sightings() -> None:
    tracker = Tracker(3, TrackerConfig(motion=False, report_after=4))
    reported_at = []
    for frame in range(10):
        _ids, ended = tracker.update([_obs(frame, 80, 80)], (200, 200))
        reported_at += [frame] * len(ended)
    assert reported_at == [3] and tracker.flush() == []
