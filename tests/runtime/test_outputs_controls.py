"""The hooks a live display drives: pausing the count, explaining one flagged cell on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.explain.worker import ExplainWorker
from sperm_edge.runtime.backends import open_backend
from sperm_edge.runtime.explanations import EngineExplanations
from sperm_edge.runtime.flagging import FlagPolicy
from sperm_edge.runtime.outputs import RunOutputs, stream
from sperm_edge.runtime.pipeline import Pipeline, PipelineConfig
from sperm_edge.runtime.sources import open_source


def _stream(bundle_path: Path, source: Path, outputs: RunOutputs, on_result=None) -> RunOutputs:
    bundle = load_bundle(bundle_path)
    policy = FlagPolicy.for_classes(bundle.abnormal_classes)
    with (
        open_source(source) as src,
        open_backend(bundle, "ort-cpu") as backend,
        outputs,
        Pipeline(src, backend, bundle.classes, bundle.preprocess, PipelineConfig(), policy) as pipeline,
    ):
        stream(pipeline, outputs, on_result)
    return outputs


def test_cells_ending_while_paused_are_not_counted(tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = clip
    full = _stream(tiny_bundle, path, RunOutputs(tmp_path / "full"))
    seen = {"frames": 0}

    def pause_in_the_middle(result) -> None:
        seen["frames"] += result.frame is not None
        outputs.paused = 8 <= seen["frames"] < 16

    outputs = RunOutputs(tmp_path / "paused")
    _stream(tiny_bundle, path, outputs, pause_in_the_middle)
    assert outputs.uncounted > 0
    assert len(outputs.events) + outputs.uncounted == len(full.events)
    report = outputs.finish(load_bundle(tiny_bundle).classes, "01_Normal", {})
    assert report["uncounted_while_paused"] == outputs.uncounted and report["cells"] == len(outputs.events)
    assert "uncounted_while_paused" not in full.finish(load_bundle(tiny_bundle).classes, "01_Normal", {})


class AskOnce:
    """An `on_result` that asks, as a live view's click would during the stream, for the first flagged cell."""

    def __init__(self) -> None:
        self.outputs: RunOutputs | None = None
        self.target: int | None = None
        self.answers: list[str] = []

    def __call__(self, result) -> None:
        flagged = [e["id"] for e in self.outputs.written if e["flagged"]]
        if self.target is None and flagged:
            with pytest.raises(KeyError):
                self.outputs.explain_event(99999)  # only counted flagged cells (they keep their crop)
            self.target = flagged[0]
            self.answers += [self.outputs.explain_event(self.target), self.outputs.explain_event(self.target)]


def _ask_during(tiny_bundle: Path, path: Path, outputs: RunOutputs) -> AskOnce:
    ask = AskOnce()
    ask.outputs = outputs
    _stream(tiny_bundle, path, outputs, ask)
    return ask


def test_explain_event_queues_the_engine_map_of_one_flagged_cell(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = clip
    out = tmp_path / "out"
    bundle = load_bundle(tiny_bundle)
    layer = (bundle.manifest.get("explain") or {}).get("layer", "attention")
    maps = EngineExplanations(out / "explanations", bundle.classes, bundle.preprocess.img_size, layer)
    ask = _ask_during(tiny_bundle, path, RunOutputs(out, explanations=maps, explain_flagged=False))
    assert ask.answers == ["queued", "queued"]  # asked twice, queued once
    name = f"{ask.target:06d}"
    assert sorted(p.name for p in (out / "explanations").iterdir()) == [f"{name}.json", f"{name}.png"]
    written = json.loads((out / "explanations" / f"{ask.target:06d}.json").read_text())
    assert written["event"] == ask.target and written["source"] == "engine"
    assert ask.outputs.explain_event(ask.target) == "ready"
    assert ask.outputs.finish(bundle.classes, bundle.normal_class, {})["explanations"]["explained"] == 1


def test_explain_event_queues_one_flagged_cell_for_the_worker(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = clip
    out = tmp_path / "out"
    bundle = load_bundle(tiny_bundle)
    with ExplainWorker(bundle.checkpoint_stem(), out / "explanations", preload=False) as worker:
        ask = _ask_during(tiny_bundle, path, RunOutputs(out, worker, explain_flagged=False))
    assert ask.answers == ["queued", "queued"] and ask.outputs.submitted == 1
    assert ask.outputs.explain_event(ask.target) == "ready"
    written = json.loads((out / "explanations" / f"{ask.target:06d}.json").read_text())
    assert written["event"] == ask.target
    assert ask.outputs.finish(bundle.classes, bundle.normal_class, {})["explanations"]["explained"] == 1
