"""The hooks a live display drives: pausing the count, explaining one flagged cell on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.runtime.outputs import RunOutputs
from sperm_edge.runtime.session import Session, SessionOptions, open_session


def _stream(bundle, source: Path, out: Path, on_result=None, **options) -> Session:
    """A run in the session `sperm-edge run` opens; `on_result(result, session)` after each frame's outputs."""
    with open_session(bundle, str(source), out, SessionOptions(backend="ort-cpu", **options)) as session:
        session.run(None if on_result is None else lambda result: on_result(result, session))
    return session


def test_cells_ending_while_paused_are_not_counted(tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = clip
    full = _stream(tiny_bundle, path, tmp_path / "full")
    seen = {"frames": 0}

    def pause_in_the_middle(result, session: Session) -> None:
        seen["frames"] += result.frame is not None
        session.outputs.paused = 8 <= seen["frames"] < 16

    paused = _stream(tiny_bundle, path, tmp_path / "paused", pause_in_the_middle)
    outputs = paused.outputs
    assert outputs.uncounted > 0
    assert len(outputs.events) + outputs.uncounted == len(full.outputs.events)
    assert paused.report["uncounted_while_paused"] == outputs.uncounted
    assert paused.report["cells"] == len(outputs.events)
    assert "uncounted_while_paused" not in full.report


class AskOnce:
    """An `on_result` that asks, as a live view's click would during the stream, for the first flagged cell."""

    def __init__(self) -> None:
        self.outputs: RunOutputs | None = None
        self.target: int | None = None
        self.answers: list[str] = []

    def __call__(self, result, session: Session) -> None:
        self.outputs = session.outputs
        flagged = [e["id"] for e in self.outputs.written if e["flagged"]]
        if self.target is None and flagged:
            with pytest.raises(KeyError):
                self.outputs.explain_event(99999)  # only counted flagged cells (they keep their crop)
            self.target = flagged[0]
            self.answers += [self.outputs.explain_event(self.target), self.outputs.explain_event(self.target)]


def test_explain_event_queues_the_engine_map_of_one_flagged_cell(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    out, ask = tmp_path / "out", AskOnce()
    session = _stream(tiny_bundle, clip[0], out, ask, explain_on_demand=True)  # the live view's --explain none
    assert ask.answers == ["queued", "queued"]  # asked twice, queued once
    name = f"{ask.target:06d}"
    assert sorted(p.name for p in (out / "explanations").iterdir()) == [f"{name}.json", f"{name}.png"]
    written = json.loads((out / "explanations" / f"{ask.target:06d}.json").read_text())
    assert written["event"] == ask.target and written["source"] == "engine"
    assert ask.outputs.explain_event(ask.target) == "ready"
    assert session.report["explanations"]["explained"] == 1


def test_explain_event_queues_one_flagged_cell_for_the_worker(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    out, ask = tmp_path / "out", AskOnce()
    bundle = load_bundle(tiny_bundle)
    bundle.manifest["explain"] = {"engine": False, "reason": "a model without a cam output"}
    session = _stream(bundle, clip[0], out, ask, explain_on_demand=True)
    assert ask.answers == ["queued", "queued"] and ask.outputs.submitted == 1
    assert ask.outputs.explain_event(ask.target) == "ready"
    written = json.loads((out / "explanations" / f"{ask.target:06d}.json").read_text())
    assert written["event"] == ask.target
    assert session.report["explanations"]["explained"] == 1
