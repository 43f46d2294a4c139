"""The real-field benchmark end to end on short clips: a row per set, look and seed, the other lab's drift verdict
on plain clips, the held-out look marked, rows kept for a resumed run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.benchmarks._scripts import load_script


def test_real_fields_rows_cover_every_set_look_and_seed_and_resume(hushem: Path, smids: Path, tmp_path: Path) -> None:
    from tests.runtime._bundle import build_tiny_bundle

    bench = load_script("real_fields")
    cache, out = tmp_path / "cache", tmp_path / "results"
    tiny = build_tiny_bundle(tmp_path)
    for name in ("hushem", "smids"):  # bundles already in the cache are used as they are: nothing is trained here
        shutil.copytree(tiny, cache / "bundles" / name)
    args = ["--data", str(hushem.parent), "--cache", str(cache), "--out", str(out), "--looks", "plain,halos",
            "--seeds", "3", "--plain-seeds", "4", "--cells", "5", "--frames", "6", "--cross-frames", "4",
            "--threads", "1"]  # fmt: skip
    assert bench.main(args) == 0
    result = json.loads((out / "real_fields.json").read_text())
    rows = result["rows"]
    assert sorted((r["set"], r["look"], r["seed"]) for r in rows) == [
        (name, look, seed) for name in ("hushem", "smids") for look, seed in (("halos", 3), ("plain", 3), ("plain", 4))
    ]
    for row in rows:
        assert {"recall", "precision", "double_count_rate", "class_agreement", "percent_normal",
                "percent_normal_truth", "ci95", "drift_warning", "fps", "held_out"} <= set(row)  # fmt: skip
        assert row["held_out"] == (row["look"] == "halos") and row["fps"] > 0 and 0 <= row["recall"] <= 1
        assert ("cross_lab_drift_warning" in row) == (row["look"] == "plain")
    assert {(s["set"], s["look"]) for s in result["summary"]} == {(n, lk) for n in ("hushem", "smids")
                                                                   for lk in ("plain", "halos")}  # fmt: skip
    assert "halos (held out)" in (out / "real_fields.md").read_text()
    # a second run reuses the rows it kept (a cut benchmark resumes)
    assert bench.main(args) == 0
    again = json.loads((out / "real_fields.json").read_text())["rows"]
    assert [r["fps"] for r in again] == [r["fps"] for r in rows]
