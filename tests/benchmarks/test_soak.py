"""The soak benchmark end to end on a few hundred frames: samples, checks, soak.json and soak.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks._scripts import load_script


def test_flatness_checks_catch_growth() -> None:
    soak = load_script("soak")
    flat = [{"frames": i * 100, "fps": 50.0, "rss_mb": 200.0, "fds": 12, "threads": 9, "tracking_ms": 0.5,
             "disk_mb": 0.4 * i} for i in range(40)]  # fmt: skip
    assert soak.flatness(flat, 0.1)["ok"] and soak.flatness(flat, 0.1)["disk"]["q4_mb_per_1k_frames"] == 4.0
    piling_up = [{**s, "disk_mb": 0.4 * i + 0.05 * max(0, i - 20) ** 2} for i, s in enumerate(flat)]
    assert not soak.flatness(piling_up, 0.1)["disk"]["ok"] and not soak.flatness(piling_up, 0.1)["ok"]
    leaking = [{**s, "rss_mb": 200.0 + 2 * i, "fds": 12 + i // 10} for i, s in enumerate(flat)]
    checks = soak.flatness(leaking, 0.1)
    assert not checks["ok"] and not checks["rss"]["ok"] and not checks["fds"]["ok"] and checks["threads"]["ok"]
    assert "samples after warm-up" in soak.flatness(flat[:5], 0.1)["reason"]
    flickering = [{**s, "fds": 12 + (i * 7 % 3 == 0)} for i, s in enumerate(flat)]  # a descriptor now and then
    assert soak.flatness(flickering, 0.1)["fds"]["ok"]
    dipping = [{**s, "threads": 8 if i == 8 else 9} for i, s in enumerate(flat)]  # a worker between two jobs
    assert soak.flatness(dipping, 0.1)["threads"]["ok"]


@pytest.mark.slow
def test_a_short_soak_writes_its_figures(tmp_path_factory, tmp_path: Path) -> None:
    from tests.runtime._bundle import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path_factory.getbasetemp())
    out = tmp_path / "results"
    args = ["--bundle", str(bundle), "--crop-frames", "400", "--field-frames", "60", "--field-size", "240x180",
            "--interval", "0.05", "--out", str(out), "--work", str(tmp_path / "work")]  # fmt: skip
    code = load_script("soak").main(args)
    result = json.loads((out / "soak.json").read_text())
    assert [run["mode"] for run in result["runs"]] == ["crop", "field"]
    assert result["runs"][0]["frames"] == 400 and result["runs"][1]["frames"] == 60
    assert result["runs"][0]["reopens"] == 0  # looping is not a reopen
    sample = result["runs"][1]["samples"][-1]
    assert {"t", "frames", "fps", "rss_mb", "fds", "threads", "disk_mb", "tracking_ms"} <= set(sample)
    disk = [s["disk_mb"] for s in result["runs"][0]["samples"] if s["disk_mb"] is not None]
    assert disk and disk[-1] > 0  # every 10th sample: the run's events and crops at least
    assert code == (0 if result["ok"] else 1) and (out / "soak.png").stat().st_size > 1000
    assert result["loadavg_start_end"][0] and "--crop-frames 400" in result["command"]
    assert load_script("soak").main(["--recheck", str(out / "soak.json")]) == code
    assert json.loads((out / "soak.json").read_text())["runs"][0]["checks_as_run"]
