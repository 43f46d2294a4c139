"""Architectures timed side by side: one row per architecture and size, written with the load average."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "arch_latency.py"


def test_times_each_architecture_at_its_own_size_and_writes_the_report(tmp_path) -> None:
    out = tmp_path / "arch_latency.json"
    configs = ["cbam_efficientnet_lite1@64", "simple_cnn@32"]
    args = ["--configs", *configs, "--iters", "3", "--rounds", "1", "--warmup", "0", "--threads", "1"]
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["arch"], r["img_size"], r["iters"]) for r in rows] == [
        ("cbam_efficientnet_lite1", 64, 3),
        ("simple_cnn", 32, 3),
    ]
    assert rows[0]["params_m"] > rows[1]["params_m"] > 0 and rows[0]["p50_vs_first"] == 1.0
    assert all(r["p50_ms"] > 0 for r in rows)
    assert report["threads"] == 1 and report["loadavg_before"] and "cbam_efficientnet_lite1 | 64 |" in done.stdout


def test_a_config_without_its_size_or_an_unknown_arch_is_a_clear_error(tmp_path) -> None:
    out = tmp_path / "arch_latency.json"
    for config, message in (("cbam_efficientnet_lite1", "expected ARCH@PIXELS"), ("nope@64", "unknown architecture")):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--configs", config, "--out", str(out)], capture_output=True, text=True
        )
        assert done.returncode != 0 and message in done.stderr
        assert "Traceback" not in done.stderr and not out.exists()
