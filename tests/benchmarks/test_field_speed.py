"""The field-speed benchmark end to end on short real-crop clips: rows, agreement, resume, the record."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks._scripts import load_script


def test_field_speed_runs_both_policies_on_each_clip_and_resumes(hushem: Path, smids: Path, tmp_path: Path) -> None:
    from tests.runtime._bundle import build_tiny_bundle

    speed = load_script("field_speed")
    tiny_bundle = build_tiny_bundle(tmp_path)
    data, out, work = hushem.parent, tmp_path / "results", tmp_path / "work"
    args = ["--hushem-bundle", str(tiny_bundle), "--smids-bundle", str(tiny_bundle), "--data", str(data),
            "--seeds", "0", "--frames", "12", "--cells", "6", "--threads", "1", "--backend", "ort-cpu",
            "--work", str(work), "--out", str(out)]  # fmt: skip
    assert speed.main(args) == 0
    result = json.loads((out / "field_speed.json").read_text())
    rows = result["rows"]
    assert sorted((r["clip"], r["policy"]) for r in rows) == [
        (clip, policy) for clip in ("hushem-0", "smids-0", "synthetic-0") for policy in ("budget", "every_frame")
    ]
    for row in rows:
        assert {"set", "clip", "policy", "fps", "inferences_per_cell", "class_agreement", "recall", "precision",
                "load_before", "load_after"} <= set(row)  # fmt: skip
        assert row["frames"] == 12 and row["fps"] > 0 and "classes" not in row
        assert (row["class_agreement"] is None) == (row["policy"] == "every_frame")
    assert result["commit"] and result["machine"] and not (out / "field_speed.partial.json").exists()
    assert "| hushem | hushem-0 | budget |" in (out / "field_speed.md").read_text()
    # an interrupted run resumes: finished clips are not run again
    (out / "field_speed.partial.json").write_text(
        json.dumps([{**r, "classes": {}} for r in rows if r["set"] != "smids"])
    )
    assert speed.main(args) == 0
    again = json.loads((out / "field_speed.json").read_text())["rows"]
    assert [r["fps"] for r in again if r["set"] == "hushem"] == [r["fps"] for r in rows if r["set"] == "hushem"]
    assert len(again) == len(rows)
