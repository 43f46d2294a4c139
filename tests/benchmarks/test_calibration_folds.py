"""Calibration pooled over the test folds of a real (tiny) k-fold run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sperm_edge.train.config import TrainConfig
from sperm_edge.train.run import train

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "calibration_folds.py"


def test_pools_every_test_fold_and_writes_the_diagram(tiny_folder, tmp_path) -> None:
    cfg = TrainConfig(
        data=str(tiny_folder),
        out=str(tmp_path / "run"),
        arch="simple_cnn",
        phase1_epochs=1,
        phase2_epochs=1,
        img_size=32,
        batch_size=8,
    )
    train(cfg, folds=2)
    out = tmp_path / "calibration"
    done = subprocess.run([sys.executable, str(SCRIPT), cfg.out, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((out / "calibration.json").read_text())
    test_sizes = [len(json.loads((Path(cfg.out) / f"fold-{k}" / "split.json").read_text())["test"]) for k in (1, 2)]
    assert row["folds"] == 2 and row["n"] == sum(test_sizes) == 36
    assert [f["n"] for f in row["per_fold"]] == test_sizes
    assert 0.0 <= row["ece_calibrated"] <= 1.0 and row["binary_ece"] is None  # no normal class
    assert (out / row["reliability_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| run | folds |" in (out / "calibration.md").read_text()


def test_a_folder_without_folds_is_refused_in_one_line(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert done.returncode != 0 and "no finished folds" in done.stderr and "Traceback" not in done.stderr
