from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.events import EventLog, find_event, read_events
from sperm_edge.runtime.flagging import FlagPolicy, FlagStore


def test_events_are_on_disk_as_soon_as_they_are_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.write({"id": 1, "class": "a"})
        assert read_events(path) == [{"id": 1, "class": "a"}]  # readable while the run goes on
        log.write({"id": 2, "class": "b"})
    with open(path, "a") as handle:
        handle.write('{"id": 3, "cla')  # a crash mid-line
    assert [e["id"] for e in read_events(path)] == [1, 2]
    assert find_event(path, 2)["class"] == "b"
    with pytest.raises(SpermEdgeError, match=r"no event 9 .* \(ids present: 1..2\)"):
        find_event(path, 9)


def test_flag_policy_reasons() -> None:
    policy = FlagPolicy.for_classes(["tapered"], min_confidence=0.6, min_stability=0.7)
    assert policy.reasons("normal", 0.9, 1.0) == []
    assert policy.reasons("tapered", 0.9) == ["abnormal"]
    assert policy.reasons("normal", 0.5, 0.6) == ["low_confidence", "unstable"]


def test_flagged_cells_go_to_disk_and_to_a_bounded_ring_buffer(tmp_path: Path) -> None:
    store = FlagStore(tmp_path, capacity=3)
    crop = np.zeros((20, 16, 3), np.uint8)
    crop[..., 0] = 255
    for i in range(1, 6):
        paths = store.add({"id": i, "class": "x"}, crop, np.zeros((40, 50, 3), np.uint8))
    assert paths == {"crop": "flagged/000005.png", "frame_image": "flagged/000005.frame.jpg"}
    assert store.count == 5 and [r["event"]["id"] for r in store.recent] == [3, 4, 5]
    saved = cv2.cvtColor(cv2.imread(str(tmp_path / "flagged" / "000001.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(saved, crop)  # lossless
    assert json.loads((tmp_path / "flagged" / "000004.json").read_text())["crop"] == "flagged/000004.png"
    assert not list((tmp_path / "flagged").glob("*.tmp"))


def test_run_outputs_keep_events_on_disk_not_in_memory(tmp_path: Path) -> None:
    """A run of hours counts hundreds of thousands of cells: memory must not grow with each one."""
    import tracemalloc

    from sperm_edge.runtime.outputs import RunOutputs
    from sperm_edge.runtime.pipeline import CellEvent, FrameResult

    def result(i: int) -> FrameResult:
        event = {"id": i, "class": "normal", "confidence": 0.9, "flagged": False, "flag_reasons": [],
                 "probs": {"normal": 0.9, "tapered": 0.1}, "box": [0, 0, 10, 10], "frame": i}  # fmt: skip
        return FrameResult(None, [], [CellEvent(event)], 30.0)

    with RunOutputs(tmp_path / "out") as outputs:
        for i in range(200):
            outputs.write(result(i))
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for i in range(200, 3200):
            outputs.write(result(i))
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
    assert grown < 100_000, grown  # ~1 KB per event if they were kept
    assert outputs.count == 3200 and [e["id"] for e in outputs.events] == list(range(3200))
    report = outputs.finish(["normal", "tapered"], "normal", {})
    assert report["counts"] == {"normal": 3200, "tapered": 0}


def test_flagged_images_stay_bounded_on_disk(tmp_path: Path) -> None:
    """Full frames for the first few flagged cells only; no image at all below the free-space floor."""
    import numpy as np

    from sperm_edge.runtime.flagging import FlagStore

    crop, frame = np.full((20, 20, 3), 90, np.uint8), np.full((60, 80, 3), 120, np.uint8)
    store = FlagStore(tmp_path / "run", max_frames=2)
    written = [store.add({"id": i, "class": "x"}, crop, frame) for i in range(1, 5)]
    assert [("frame_image" in w, "crop" in w) for w in written] == [(True, True)] * 2 + [(False, True)] * 2
    assert store.frames_skipped == 2 and len(list((tmp_path / "run" / "flagged").glob("*.frame.jpg"))) == 2
    full = FlagStore(tmp_path / "full", min_free_mb=1e12)  # more than any disk has free: the floor is reached
    assert full.add({"id": 1, "class": "x"}, crop, frame) == {} and full.images_skipped_low_disk == 1
    assert full.count == 1 and not list((tmp_path / "full" / "flagged").glob("*.png"))
