"""The event log: one JSON line per counted cell, flushed as it goes, after a run header.

The first line of a run's log is its header (`type: "run"`: run id, software version, the bundle's
manifest hash, engine, host, start time, sample id and operator, classes), so the log alone says
what produced it and `sperm-edge report` can rebuild the report from it. Each line is written and
flushed at once, and the file is fsync'ed at most once a second, so a crash or power cut loses at
most the last second of cells; a torn last line is skipped when the log is read back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import name_the_file
from sperm_edge.tta import VIEWS

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
SET_ASIDE_FILE = "set_aside.jsonl"  # cells not counted, with their `reason` (same lines as events.jsonl)
RUN_HEADER = "run"  # the `type` of a log's first line


@dataclass(frozen=True)
class Event:
    """One cell as events.jsonl records it (and set_aside.jsonl, with `counted` False): the schema of a line,
    built only by the pipeline. Outputs add the files they wrote for a flagged cell (crop, frame, heatmap)."""

    id: int  # the track's id: a cell counted once keeps it through its sightings
    time: str  # wall-clock ISO 8601 of the sighting the event describes (UTC, milliseconds)
    t: float  # seconds since the run started
    frame: int
    box: list[int]  # the head, x0 y0 x1 y1 in the frame
    crop_box: list[int]  # what the network saw
    label: str  # the class ("class" in JSON)
    confidence: float
    probs: dict[str, float]  # calibrated, per class
    flag_reasons: list[str]  # why a person should look (empty: not flagged)
    frames_seen: int
    inferences: int  # sightings the network classified (`runtime.budget`)
    first_frame: int
    last_frame: int
    stability: float  # share of sightings that agreed with the class
    name: str = ""  # the image's file name (crop and folder sources)
    camera: dict = field(default_factory=dict)  # camera_frame_id, camera_timestamp: as the camera numbered it
    view: int | None = None  # the dihedral view the crop was classified in (field mode's rolling views)
    drift_score: float | None = None
    verifier: float | None = None  # P(one sperm head) from the bundle's head verifier (field mode)
    counted: bool = True  # False: set aside (unlike the training cells, or not a head), not in the counts

    def to_json(self) -> dict:
        line = {
            "id": self.id,
            "time": self.time,
            "t": round(self.t, 3),
            "frame": self.frame,
            "box": list(self.box),
            "crop_box": list(self.crop_box),
            "class": self.label,
            "confidence": round(self.confidence, 5),
            "probs": {c: round(float(p), 5) for c, p in self.probs.items()},
            "flagged": bool(self.flag_reasons),
            "flag_reasons": list(self.flag_reasons),
            "track": self.id,
            "frames_seen": self.frames_seen,
            "inferences": self.inferences,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "stability": round(self.stability, 3),
        }
        if self.name:
            line["name"] = self.name
        line |= self.camera
        if self.view is not None:
            line["view"] = self.view
        if self.drift_score is not None:
            line["drift_score"] = self.drift_score
        if self.verifier is not None:
            line["verifier"] = round(self.verifier, 5)
        return line | ({} if self.counted else {"counted": False})


class EventLog:
    """Append-only JSONL writer: `with EventLog(path) as events: events.write({...})`; `header`, when given, is
    written as the first line of a new log (it is not counted)."""

    def __init__(self, path: str | Path, sync_interval: float = 1.0, header: dict | None = None) -> None:
        self.path = Path(path)
        self.sync_interval = sync_interval
        self.header = header
        self.count = 0
        self._handle = None
        self._last_sync = 0.0

    def __enter__(self) -> EventLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        self._last_sync = time.monotonic()
        if self.header is not None and self._handle.tell() == 0:
            self._line({**self.header, "type": RUN_HEADER})
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def write(self, event: dict) -> None:
        if self._handle is None:
            raise SpermEdgeError(f"event log {self.path} is not open")
        self._line(event)
        self.count += 1

    def _line(self, record: dict) -> None:
        try:
            self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._handle.flush()
            now = time.monotonic()
            if now - self._last_sync >= self.sync_interval:
                os.fsync(self._handle.fileno())
                self._last_sync = now
        except OSError as err:
            raise name_the_file(err, self.path) from None

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as err:
                raise name_the_file(err, self.path) from None
            finally:
                try:
                    handle.close()  # the buffer it could not write is gone with it: the log ends at its last line
                except OSError:
                    pass


def _records(path: str | Path) -> list[dict]:
    """Every complete line of a log, header included (a torn last line, from a crash, is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise SpermEdgeError(f"event log not found: {path}")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d is incomplete; skipped", path, number)
                continue
            if not isinstance(record, dict):
                raise SpermEdgeError(f"{path} line {number} is not an event (a JSON object): {line[:80]!r}")
            records.append(record)
    return records


def read_events(path: str | Path) -> list[dict]:
    """Every complete event in a log, without its run header (a torn last line, from a crash, is skipped)."""
    return [r for r in _records(path) if r.get("type") != RUN_HEADER]


def read_run_header(path: str | Path) -> dict | None:
    """The run header of a log (its first line), or None for a log written before headers existed."""
    records = _records(path)
    return records[0] if records and records[0].get("type") == RUN_HEADER else None


def find_event(path: str | Path, event_id: int) -> dict:
    """The event with `id` == event_id; a missing id fails with the range present."""
    events = read_events(path)
    for event in events:
        if event.get("id") == event_id:
            return event
    ids = [e.get("id") for e in events]
    span = f"{min(ids)}..{max(ids)}" if ids else "none"
    raise SpermEdgeError(f"no event {event_id} in {path} (ids present: {span})")


def event_view(event: dict, path: str | Path) -> int:
    """The dihedral view (`sperm_edge.tta`) the stream's network saw the event's crop in: 0 for logs that predate it."""
    view = event.get("view", 0)
    if isinstance(view, bool) or not isinstance(view, int) or not 0 <= view < VIEWS:
        raise SpermEdgeError(f"event {event.get('id')} in {path}: view must be an integer 0-{VIEWS - 1}, got {view!r}")
    return view
