from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks._scripts import BENCHMARKS


def test_retrained_folds_are_set_beside_the_committed_row(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for fold, accuracy in ((1, 0.93), (2, 0.90), (4, 0.95)):  # fold 3 unfinished: left out
        (run / f"fold-{fold}").mkdir(parents=True)
        (run / f"fold-{fold}" / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "train_device": "cpu"}))
    (run / "fold-3").mkdir()
    table = tmp_path / "table.json"
    row = {"dataset": "hushem", "arch": "a", "precision": "fp32", "recipe_name": "r", "accuracy_per_fold": [0.9, 0.92]}
    table.write_text(json.dumps([{**row, "precision": "int8"}, row]))
    args = [str(run), "--dataset", "hushem", "--arch", "a", "--recipe", "r", "--table", str(table)]
    out = tmp_path / "o" / "rerun"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "fold_rerun.py"), *args, "--out", str(out)], text=True,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["folds"] == [1, 2, 4] and result["rerun"]["per_fold"] == [0.93, 0.90, 0.95]
    assert result["committed"]["mean"] == pytest.approx(0.91) and result["difference"] == pytest.approx(
        (0.93 + 0.90 + 0.95) / 3 - 0.91
    )
    assert 0.0 < result["welch_p"] <= 1.0 and "| retrained | 3 |" in out.with_suffix(".md").read_text()
    script = [sys.executable, str(BENCHMARKS / "fold_rerun.py")]
    missing = [
        str(run),
        "--dataset",
        "hushem",
        "--arch",
        "a",
        "--recipe",
        "x",
        "--table",
        str(table),
        "--out",
        str(out),
    ]
    wrong = subprocess.run([*script, *missing], text=True, capture_output=True)
    assert wrong.returncode != 0 and "has no fp32 row" in wrong.stderr and "Traceback" not in wrong.stderr
