"""Engine explanations during a run: bounded per-track heatmaps (`--explain every`) and the run's report."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.runtime.events import read_events
from sperm_edge.runtime.explanations import TrackHeatmaps
from sperm_edge.runtime.pipeline import CellResult
from tests.conftest import run_cli


def _cell(track: int, rng: np.random.Generator) -> CellResult:
    crop = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    return CellResult((0, 0, 4, 4), "a", 0.9, track, False, rng.uniform(0, 1, (3, 3)).astype(np.float32), crop)


def test_track_heatmaps_keep_the_latest_of_each_track_within_capacity() -> None:
    rng = np.random.default_rng(0)
    store = TrackHeatmaps(capacity=5, side=32)
    for frame in range(4):
        store.update([_cell(t, rng) for t in range(frame * 3, frame * 3 + 4)])
    assert store.tracks() == [8, 9, 10, 11, 12] and len(store) == 5
    assert store.png(0) is None and store.info(12) == {"track": 12, "class": "a", "confidence": 0.9}
    image = cv2.imdecode(np.frombuffer(store.png(12), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (32, 26, 3)  # the crop's aspect, `side` px high
    store.update([CellResult((0, 0, 1, 1), "a", 0.5, 99, False)])  # a cell without a map is skipped
    assert 99 not in store.tracks()


def test_run_explain_every_keeps_heatmaps_and_writes_flagged(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = clip
    out = tmp_path / "out"
    args = ["run", str(tiny_bundle), "--source", str(path), "--headless", "--out", str(out), "--max-frames", "8"]
    assert run_cli([*args, "--explain", "every"]) == 0
    report = json.loads((out / "report.json").read_text())
    explained = report["explanations"]
    assert explained["source"] == "engine" and explained["mode"] == "every" and explained["tracks_with_heatmaps"] > 0
    flagged = read_events(out / "events.jsonl")
    flagged = [e for e in flagged if e["flagged"]]
    written = sorted((out / "explanations").glob("*.json"))
    assert explained["explained"] == len(flagged) == len(written)
    assert explained["method"] == "LayerCAM" and explained["layer"] == "backbone.blocks.4"  # the bundle's explainer
    assert all(json.loads(path.read_text())["method"] == "LayerCAM" for path in written)
