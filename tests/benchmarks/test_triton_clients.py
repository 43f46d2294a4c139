from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks._scripts import BENCHMARKS
from tests.runtime._bundle import build_tiny_bundle


@pytest.mark.slow
def test_the_benchmark_writes_a_row_per_client_count_and_mode(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient")
    from sperm_edge.data.synthetic import write_video

    bundle = build_tiny_bundle(tmp_path)
    clip = tmp_path / "pan.mp4"
    write_video(clip, frames=12, seed=3, size=(480, 360), fps=15.0)
    args = ["--bundle", str(bundle), "--source", str(clip), "--clients", "1", "2", "--out", str(tmp_path / "o")]
    script = str(BENCHMARKS / "triton_clients.py")
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if "cannot install" in done.stderr:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "o" / "triton.json").read_text())["rows"]
    assert [(r["clients"], r["mode"]) for r in rows] == [(1, "server"), (1, "local"), (2, "server"), (2, "local")]
    for row in rows:
        assert row["cells"] == rows[0]["cells"] * row["clients"] and row["cells_per_s"] > 0 and row["p95_ms"] > 0
        assert (row["mean_server_batch"] is None) == (row["mode"] == "local")
    assert "| 2 | server |" in (tmp_path / "o" / "triton.md").read_text()


def test_a_missing_bundle_or_clip_is_one_line(tmp_path: Path) -> None:
    script = [sys.executable, str(BENCHMARKS / "triton_clients.py")]
    for args, message in (
        (["--bundle", str(tmp_path / "none"), "--source", str(tmp_path / "clip.mp4")], "bundle folder not found"),
        (["--bundle", str(build_tiny_bundle(tmp_path)), "--source", str(tmp_path / "clip.mp4")], "clip not found"),
    ):
        done = subprocess.run([*script, *args], capture_output=True, text=True)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
