from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.benchmarks._scripts import BENCHMARKS
from tests.conftest import write_tiny_folder


def test_every_fold_is_exported_as_the_readme_does_and_timed_beside_fp32(tmp_path: Path) -> None:
    from sperm_edge.train.config import TrainConfig
    from sperm_edge.train.run import train

    data = write_tiny_folder(tmp_path / "data", per_class=12)
    runs = tmp_path / "tiny-lite0"
    train(TrainConfig(data=str(data), out=str(runs / "fold-1"), phase1_epochs=1, phase2_epochs=1, img_size=32))
    (runs / "fold-2").mkdir()  # unfinished: left out
    out = tmp_path / "results" / "int8_search"
    args = ["--runs", str(runs), "--cache", str(tmp_path / "cache"), "--time", "--out", str(out)]
    done = subprocess.run([sys.executable, str(BENCHMARKS / "int8_search.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {row["precision"]: row for row in result["rows"]}
    assert set(rows) == {"int8", "int8_cpu"} and {row["fold"] for row in rows.values()} == {1}
    for row in rows.values():
        assert row["dataset"] == "data" and row["arch"] == "cbam_efficientnet_lite0"
        assert row["candidates"] >= 1 and isinstance(row["keep_float"], list)
        assert 0.0 <= row["int8_val"] <= 1.0 and 0.0 <= row["int8_test"] <= 1.0
        assert row["ms_fp32"] > 0
        if row["shipped"]:  # a refused model is not timed; the search's first candidate is timed for a shipped one
            assert row["ms_int8"] > 0 and row["ms_full_int8"] > 0
        else:
            assert row["ms_int8"] is None and row["candidates"] > 1
    assert (tmp_path / "cache" / "tiny-lite0" / "fold-1" / "latency.json").is_file()
    assert "| data | cbam_efficientnet_lite0 | 1 | int8 |" in out.with_suffix(".md").read_text()

    empty = subprocess.run(
        [sys.executable, str(BENCHMARKS / "int8_search.py"), "--runs", str(tmp_path / "none"), "--cache", "c"],
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 2 and "no finished fold-K runs" in empty.stderr and "Traceback" not in empty.stderr
