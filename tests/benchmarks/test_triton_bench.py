from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.benchmarks._scripts import BENCHMARKS
from tests.runtime._bundle import build_tiny_bundle


@pytest.mark.slow
def test_the_benchmark_writes_a_row_per_client_count_and_mode(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient")
    bundle = build_tiny_bundle(tmp_path)
    crops = tmp_path / "crops" / "a"
    crops.mkdir(parents=True)
    for i in range(6):
        cv2.imwrite(str(crops / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    args = ["--bundle", str(bundle), "--crops", str(crops.parent), "--clients", "1", "2", "--out", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, str(BENCHMARKS / "triton.py"), *args], capture_output=True, text=True)
    if "cannot install" in done.stderr:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "o" / "triton.json").read_text())["rows"]
    assert [(r["clients"], r["mode"]) for r in rows] == [(1, "server"), (1, "local"), (2, "server"), (2, "local")]
    for row in rows:
        assert row["cells"] == 6 * row["clients"] and row["cells_per_s"] > 0 and row["p95_ms"] > 0
        assert (row["mean_server_batch"] is None) == (row["mode"] == "local")
    assert "| 2 | server |" in (tmp_path / "o" / "triton.md").read_text()
