"""What the page shows, for a run that is going on or one that has finished; safe to read from the web thread.

`RunState` keeps the counted events (in the order they were counted), the tally kept up to date
as they arrive, exactly as the report computes it (`report.Tally`), the stream's figures, and
whether counting is paused or the run finished. `Controls` is what the page's buttons act on:
`RunControls` drives a live run (its pipeline and outputs), `FinishedControls` a run folder.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.events import EVENTS_FILE, read_events
from sperm_edge.runtime.flagging import event_name
from sperm_edge.runtime.outputs import EXPLANATIONS_DIR
from sperm_edge.runtime.report import Tally

log = logging.getLogger(__name__)

GALLERY_SIZE = 60  # flagged cells whose heatmap state the status carries (the page shows these)


class Conflict(Exception):
    """An action the run's state does not allow (pausing a finished run): HTTP 409."""


class Controls(Protocol):
    """What the page's buttons do; `explain` returns ready, queued or unavailable."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def finish(self) -> None: ...
    def explain(self, event_id: int) -> str: ...


class RunState:
    """Events, tally and figures of one run; `add_events` on the output thread, the rest from anywhere."""

    def __init__(
        self,
        out_dir: str | Path,
        classes: Sequence[str],
        normal_class: str | None,
        info: dict | None = None,
        live: bool = True,
        figures: Callable[[], dict] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir).resolve()
        self.classes, self.normal_class = list(classes), normal_class
        self.info = dict(info or {})
        self.live = live
        self.figures = figures or (lambda: {})
        self.paused = False
        self.finished = False
        self.report: dict | None = None
        self._events: list[dict] = []
        self._position: dict[int, int] = {}
        self._tally = Tally()
        self._flagged: deque[int] = deque(maxlen=GALLERY_SIZE)
        self._lock = threading.Lock()

    # -- updates ----------------------------------------------------------------------------------
    def add_events(self, events: Sequence[dict]) -> None:
        with self._lock:
            for event in events:
                self._position[int(event["id"])] = len(self._events)
                self._events.append(event)
                if event.get("flagged"):
                    self._flagged.append(event["id"])
            self._tally.add(events)

    def finish(self, report: dict | None) -> None:
        self.report, self.finished, self.paused = report, True, False

    # -- queries ----------------------------------------------------------------------------------
    def event(self, event_id: int) -> dict | None:
        with self._lock:
            position = self._position.get(int(event_id))
            return self._events[position] if position is not None else None

    def events_after(self, since: int, limit: int = 1000) -> list[dict]:
        """Events counted after event `since` (0: from the first); KeyError for an id never counted."""
        with self._lock:
            start = 0 if since == 0 else self._position[since] + 1
            return self._events[start : start + limit]

    def file(self, folder: str, event_id: int) -> Path | None:
        """`OUT/<folder>/ID.png` of an event if it exists (ids are ints: no traversal possible)."""
        path = self.out_dir / folder / f"{event_name(event_id)}.png"
        return path if path.is_file() and path.resolve().parent == (self.out_dir / folder).resolve() else None

    def status(self) -> dict:
        """The tally (as the report computes it), figures, flags and state of the run."""
        with self._lock:  # a few counters, not a pass over every event: polled often during long runs
            summary = self._tally.summary(self.classes, self.normal_class)
            flagged = list(self._flagged)
            last = self._events[-1]["id"] if self._events else None
        figures = {"frames": 0, "fps": 0.0, "stages_ms": {}, "uncounted": 0}
        if self.report is not None:
            figures.update({k: self.report[k] for k in ("frames", "fps") if k in self.report})
            figures["stages_ms"] = {k: v.get("p50") for k, v in self.report.get("stages_ms", {}).items()}
        figures.update(self.figures())
        return {
            **figures,
            "counts": summary["counts"],
            "cells": summary["cells"],
            "flagged": summary["flagged"],
            "percent_normal": summary["percent_normal"],
            "ci95": summary["ci95"],
            "paused": self.paused,
            "finished": self.finished,
            "live": self.live and not self.finished,
            "sperm_counted": summary["sperm_counted"],
            "who_minimum": summary["who_minimum"],
            "normal_class": self.normal_class,
            "classes": self.classes,
            "warnings": _warnings(summary, self.report),
            "last_event": last,
            "explained": [i for i in flagged if self.file(EXPLANATIONS_DIR, i) is not None],
            "source": self.info.get("source"),
            "backend": self.info.get("backend"),
            "heatmaps": self.info.get("heatmaps") or (self.info.get("explanations") or {}).get("trust"),
            "report": "report.md" if self.report is not None else None,
        }


def _warnings(summary: dict, report: dict | None) -> list[str]:
    """The WHO-minimum warning, and any `warning` a section of the report carries (e.g. drift)."""
    found = [summary["warning"]] if summary.get("warning") else []
    for value in (report or {}).values():
        if isinstance(value, dict) and isinstance(value.get("warning"), str):
            found.append(value["warning"])
    return found


class RunControls:
    """The buttons of a live run: pause and resume counting (`RunOutputs`), finish (`Pipeline.stop`)."""

    def __init__(self, state: RunState, pipeline, outputs) -> None:
        self.state, self.pipeline, self.outputs = state, pipeline, outputs

    def _running(self) -> None:
        if self.state.finished or self.pipeline.stopping:
            raise Conflict("the run is finishing or finished")

    def pause(self) -> None:
        self._running()
        self.outputs.paused = self.state.paused = True
        log.info("counting paused from the live view")

    def resume(self) -> None:
        self._running()
        self.outputs.paused = self.state.paused = False
        log.info("counting resumed from the live view")

    def finish(self) -> None:
        self._running()
        log.info("sample finished from the live view")
        self.outputs.paused = self.state.paused = False
        self.pipeline.stop()

    def explain(self, event_id: int) -> str:
        return self.outputs.explain_event(event_id)


class FinishedControls:
    """The buttons over a finished run folder: nothing to pause; heatmaps already written are ready."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pause(self) -> None:
        raise Conflict("the run is finished")

    def resume(self) -> None:
        raise Conflict("the run is finished")

    def finish(self) -> None:
        raise Conflict("the run is finished")

    def explain(self, event_id: int) -> str:
        if self.state.file(EXPLANATIONS_DIR, event_id) is not None:
            return "ready"
        return "unavailable"


def load_run(run_dir: str | Path) -> RunState:
    """A finished run folder (events.jsonl, report.json, flagged/, explanations/) as a `RunState`."""
    run_dir = Path(run_dir)
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise SpermEdgeError(f"{run_dir} is not a finished run: no report.json")
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError as err:
        raise SpermEdgeError(f"{report_path} is not valid JSON: {err}") from err
    classes = list(report.get("counts", {}))
    state = RunState(run_dir, classes, report.get("normal_class"), report, live=False)
    state.add_events(read_events(run_dir / EVENTS_FILE))
    state.finish(report)
    return state
