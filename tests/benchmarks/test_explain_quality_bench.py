"""benchmarks/explain_quality.py on a bundle exported from a real (tiny) training run: one row per set and method."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks._scripts import load_script
from tests.conftest import write_tiny_folder

KEYS = {"set", "method", "pointing", "pointing_centre", "heat_share", "heat_share_centre_matched", "road_combined",
        "ms_per_cell"}  # fmt: skip


def test_every_method_and_baseline_gets_a_row_with_the_named_fields(tmp_path: Path) -> None:
    from sperm_edge.export import ExportOptions, export_bundle
    from sperm_edge.train.config import TrainConfig
    from sperm_edge.train.run import train

    bench = load_script("explain_quality")
    data = write_tiny_folder(tmp_path / "data", per_class=12)
    run = tmp_path / "run"
    train(TrainConfig(data=str(data), out=str(run), phase1_epochs=1, phase2_epochs=1, img_size=64))
    bundle = tmp_path / "bundle"
    manifest = export_bundle(run, bundle, ExportOptions(parity_count=8, latency_runs=2)).manifest
    assert [c["maps"] for c in manifest["explain"]["candidates"]] == ["cam", "explainer", "explainer"]
    out = tmp_path / "out"
    assert bench.main(["--bundle", f"tiny={bundle}", "--road-limit", "4", "--out", str(out)]) == 0
    result = json.loads((out / "explain_quality.json").read_text())
    rows = result["rows"]
    methods = [r["method"] for r in rows]
    drawn = manifest["explain"]["maps"]
    assert methods == ["Grad-CAM++", *(["LayerCAM"] if drawn == "explainer" else []), "centre blob", "random map"]
    for row in rows:
        assert KEYS <= set(row) and row["set"] == "tiny"
        assert row["pointing"] is None or 0.0 <= row["pointing"] <= 1.0
        assert isinstance(row["road_combined"], float)
    assert all(r["ms_per_cell"] > 0 for r in rows if r["method"] not in ("centre blob", "random map"))
    assert (out / "explain_quality.md").read_text().count("| tiny |") == len(rows)
    assert (out / "grid_tiny.png").is_file() and (out / "road.png").is_file()
