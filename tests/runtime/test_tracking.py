from __future__ import annotations

from pathlib import Path

import numpy as np

from sperm_edge.localize import Detection, find_cells
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


def test_a_piece_cut_from_a_blob_counts_only_once_it_has_been_seen_in_min_cut_frames() -> None:
    def sightings(frames: int) -> list:
        tracker = Tracker(3, TrackerConfig(motion=False, max_missed=0, min_frames=2, min_cut_frames=4))
        for frame in range(frames):
            piece = _obs(frame, 120, 80)
            piece.detection.cut = True  # the second head of a blob cut in two (`localize._unpair`)
            tracker.update([_obs(frame, 100, 80), piece], (200, 200))
        return tracker.flush()

    assert len(sightings(3)) == 1  # a long head cut in a few frames only: its flickering piece is not a cell
    assert len(sightings(4)) == 2  # a pair cut apart frame after frame: two cells


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


def test_assignment_matches_every_head_where_greedy_nearest_first_would_leave_one_out() -> None:
    # tracks a (x=50) and b (x=62), gate 10 px. Head p at 53 is nearest a (3 px; b is 9 px); head q at 44 can
    # only be a (6 px; b is 18 px). Greedy nearest-first gives p to a and leaves q a new track; the gated
    # minimum-cost assignment gives q -> a and p -> b.
    tracker = Tracker(3, TrackerConfig(motion=False, gate=0.5, min_gate=10.0))
    (a, b), _ = tracker.update([_obs(0, 50, 50), _obs(0, 62, 50)], (200, 200))
    ids, _ = tracker.update([_obs(1, 53, 50), _obs(1, 44, 50)], (200, 200))
    assert ids == [b, a] and len(tracker.tracks) == 2


def test_ended_tracks_are_retired_so_the_active_list_stays_the_size_of_the_view() -> None:
    tracker = Tracker(3, TrackerConfig(motion=False, max_missed=0, grid=64.0))
    reported = 0
    for step in range(200):  # a long scan: the stage moves 40 px per frame past a new cell each time
        tracker.offset = np.array([40.0 * step, 0.0])
        obs = [_obs(step, 100.0, 60.0), _obs(step, 140.0, 60.0)]
        _ids, ended = tracker.update(obs, (120, 240))
        reported += len(ended)
        assert len(tracker.tracks) <= 4  # only what is in view is matched every frame
    assert len(tracker.retired) >= 150 and reported >= 150
    # only retired tracks under the view are candidates, not every track ever seen
    assert len(tracker._candidates(240, 120)) <= len(tracker.tracks) + 12


def test_a_retired_track_wakes_on_a_revisit_and_the_memory_of_the_slide_is_bounded() -> None:
    tracker = Tracker(3, TrackerConfig(motion=False, max_missed=0, max_retired=5))
    for frame in range(3):
        tracker.update([_obs(frame, 60, 60)], (200, 200))
    tracker.offset = np.array([500.0, 0.0])
    assert len(tracker.update([], (200, 200))[1]) == 1 and len(tracker.retired) == 1
    tracker.offset = np.array([0.0, 0.0])
    ids, ended = tracker.update([_obs(5, 60, 60)], (200, 200))
    assert ended == [] and len(tracker.retired) == 0 and len(tracker.tracks) == 1  # woken, not counted again
    for k in range(10):  # ten more cells, each seen twice then gone: only the newest five are remembered
        tracker.offset = np.array([1000.0 * (k + 1), 0.0])
        tracker.update([_obs(10 + k, 60, 60)], (200, 200))
        tracker.update([_obs(10 + k, 60, 60)], (200, 200))
    tracker.flush()
    assert len(tracker.retired) == 5


def test_a_jump_to_another_field_ends_the_tracks_and_its_heads_are_counted_anew() -> None:
    """A pan over real smear fields jumps from one field to the next: phase correlation finds no shift it trusts
    (`TrackerConfig.cut_response`), so a head of the new field lying where one of the old field was is a new cell,
    not a revisit of the old one."""
    rng = np.random.default_rng(0)
    fields = [rng.integers(0, 255, (240, 320, 3), np.uint8) for _ in range(2)]
    tracker = Tracker(3, TrackerConfig(max_missed=1))
    reported = []
    for frame in range(6):
        image = fields[frame // 3]  # three frames of one field, then three of another
        shift = tracker.observe_motion(image)
        if frame == 3:
            assert abs(shift[0]) > 1e6  # the cut: the view is taken far away
        else:
            assert abs(shift[0]) < 1 and abs(shift[1]) < 1  # the same field, still
        reported += tracker.update([_obs(frame, 100, 100)], (240, 320))[1]
    reported += tracker.flush()
    assert len(reported) == 2
