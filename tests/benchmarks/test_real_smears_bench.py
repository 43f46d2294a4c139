"""The real-smear benchmark: a field's events scored against its head boxes, and a fold end to end (rows kept)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sperm_edge.data.smears import SmearField, is_smear_folder
from tests.benchmarks._scripts import load_script
from tests.conftest import SHARED_DATA


def test_a_fields_events_are_scored_against_its_head_boxes() -> None:
    bench = load_script("real_smears")
    cells = (
        {"id": 1, "box": [0, 0, 100, 100], "partial": False, "debris": False},
        {"id": 2, "box": [200, 0, 300, 100], "partial": False, "debris": False},
        {"id": 3, "box": [400, 0, 500, 100], "partial": False, "debris": False},
        {"id": 4, "box": [600, 0, 700, 100], "partial": True, "debris": False},
    )
    field = SmearField("f.jpg", Path("f.jpg"), cells)
    events = [
        {"box": [0, 0, 100, 100], "class": "Normal_Sperm"},  # head 1, whole box
        {"box": [10, 10, 60, 60], "class": "Abnormal_Sperm"},  # head 1 again: a double count
        {"box": [240, 40, 270, 70], "class": "Normal_Sperm"},  # head 2, too small a box (IoU < 0.5)
        {"box": [400, 0, 500, 100], "class": "Non-Sperm"},  # head 3 called debris: missed
        {"box": [900, 900, 950, 950], "class": "Normal_Sperm"},  # on no head
        {"box": [600, 0, 700, 100], "class": "Normal_Sperm"},  # a head the edge cuts: not scored
    ]
    aside = [{"box": [400, 0, 500, 100], "reason": "not_a_head"}, {"box": [800, 800, 820, 820], "reason": "not_a_head"}]
    row = bench.score_field(field, events, aside)
    assert row == {
        "field": "f.jpg", "heads": 3, "counted": 2, "found": 3, "false_counts": 1, "double_counts": 1, "iou50": 1,
        "non_sperm": 1, "set_aside": {"not_a_head:head": 1, "not_a_head:other": 1},
    }  # fmt: skip


@pytest.mark.skipif(not is_smear_folder(SHARED_DATA / "smears"), reason="real smear fields not found")
def test_a_fold_of_real_fields_runs_through_its_bundle_and_resumes(tmp_path: Path) -> None:
    from tests.runtime._bundle import build_tiny_bundle

    bench = load_script("real_smears")
    cache, out = tmp_path / "cache", tmp_path / "results"
    tiny = build_tiny_bundle(tmp_path)
    shutil.copytree(tiny, cache / "bundles" / "hushem-fold-1")  # a bundle in the cache is used: nothing is trained
    args = ["--data", str(SHARED_DATA), "--cache", str(cache), "--out", str(out), "--sets", "hushem", "--folds", "1",
            "--max-fields", "3", "--pan-fields", "1", "--pan-frames", "4", "--threads", "1"]  # fmt: skip
    assert bench.main(args) == 0
    result = json.loads((out / "real_smears.json").read_text())
    assert len(result["rows"]) == 3 and {r["bundle"] for r in result["rows"]} == {"hushem"}
    for row in result["rows"]:
        assert row["heads"] >= 1 and row["found"] <= row["heads"] and row["fps"] > 0
    pan = result["folds"][0]["pan"]
    assert pan["frames"] == 4 and pan["fps"] > 0 and 0 <= pan["recall"] <= 1
    assert result["commit"] and result["machine"] and "real_smears.py" in result["command"]
    assert "| hushem | 3 |" in (out / "real_smears.md").read_text()
    (out / "real_smears.json").unlink()
    assert bench.main(args) == 0  # the fold's rows are kept: nothing runs again
    assert json.loads((out / "real_smears.json").read_text())["rows"] == result["rows"]
