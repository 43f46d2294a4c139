"""The event log: one JSON line per counted cell, flushed as it goes.

Each line is written and flushed at once, and the file is fsync'ed at most once a second, so a
crash or power cut loses at most the last second of cells; a torn last line is skipped when the
log is read back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from sperm_edge.errors import SpermEdgeError
from sperm_edge.tta import VIEWS

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
SET_ASIDE_FILE = "set_aside.jsonl"  # cells not counted: unlike the training cells (same lines as events.jsonl)


class EventLog:
    """Append-only JSONL writer: `with EventLog(path) as events: events.write({...})`."""

    def __init__(self, path: str | Path, sync_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.sync_interval = sync_interval
        self.count = 0
        self._handle = None
        self._last_sync = 0.0

    def __enter__(self) -> EventLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        self._last_sync = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def write(self, event: dict) -> None:
        if self._handle is None:
            raise SpermEdgeError(f"event log {self.path} is not open")
        self._handle.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._handle.flush()
        self.count += 1
        now = time.monotonic()
        if now - self._last_sync >= self.sync_interval:
            os.fsync(self._handle.fileno())
            self._last_sync = now

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


def read_events(path: str | Path) -> list[dict]:
    """Every complete event in a log (a torn last line, from a crash, is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise SpermEdgeError(f"event log not found: {path}")
    events = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s line %d is incomplete; skipped", path, number)
    return events


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
