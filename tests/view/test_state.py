"""The live view's state: the tally is kept as events arrive, equal to the report's, and cheap to ask for."""

from __future__ import annotations

import time
from pathlib import Path

from sperm_edge.runtime.report import sample_summary
from sperm_edge.view.state import GALLERY_SIZE, RunState

CLASSES = ["01_Normal", "02_Tapered", "03_Pyriform", "04_Amorphous"]


def _event(i: int) -> dict:
    flagged = i % 3 == 0
    return {"id": i, "class": CLASSES[i % 4], "flagged": flagged, "flag_reasons": ["abnormal"] if flagged else []}


def test_the_status_tally_equals_the_reports_and_stays_cheap_on_long_runs(tmp_path: Path) -> None:
    state = RunState(tmp_path, CLASSES, "01_Normal")
    events = [_event(i) for i in range(1, 100_001)]
    for start in range(0, len(events), 1000):  # as the output thread hands them over
        state.add_events(events[start : start + 1000])
    start = time.perf_counter()
    for _ in range(20):
        status = state.status()
    per_poll_ms = (time.perf_counter() - start) * 1000 / 20
    report = sample_summary(events, CLASSES, "01_Normal")
    assert {k: status[k] for k in ("counts", "cells", "flagged", "percent_normal", "ci95")} == {
        k: report[k] for k in ("counts", "cells", "flagged", "percent_normal", "ci95")
    }
    assert status["last_event"] == 100_000 and per_poll_ms < 20, per_poll_ms  # was 60 ms a poll at 100k events
    assert len(state.events_after(99_990)) == 10 and GALLERY_SIZE == 60
