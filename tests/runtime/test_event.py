"""The typed event writes the lines events.jsonl always held."""

from __future__ import annotations

from sperm_edge.runtime.events import Event


def test_event_line_keeps_the_former_keys_in_order() -> None:
    event = Event(
        id=4, time="2026-12-06T21:00:00.000+00:00", t=1.23456, frame=9, box=[1, 2, 3, 4], crop_box=[0, 0, 8, 8],
        label="Normal", confidence=0.9123456, probs={"Normal": 0.9123456, "Abnormal": 0.0876544},
        flag_reasons=[], frames_seen=3, inferences=2, first_frame=7, last_frame=9, stability=0.66666,
    )  # fmt: skip
    line = event.to_json()
    assert list(line) == [
        "id", "time", "t", "frame", "box", "crop_box", "class", "confidence", "probs", "flagged", "flag_reasons",
        "track", "frames_seen", "inferences", "first_frame", "last_frame", "stability",
    ]  # fmt: skip
    assert (line["t"], line["confidence"], line["stability"], line["flagged"], line["track"]) == (
        1.235,
        0.91235,
        0.667,
        False,
        4,
    )
    camera = {"camera_frame_id": 17, "camera_timestamp": None}
    full = Event(**{**event.__dict__, "flag_reasons": ["unlike_training"], "name": "a.png", "camera": camera,
                    "view": 3, "drift_score": 2.5, "counted": False}).to_json()  # fmt: skip
    assert list(full)[17:] == ["name", "camera_frame_id", "camera_timestamp", "view", "drift_score", "counted"]
    assert full["flagged"] and full["counted"] is False and full["camera_timestamp"] is None
