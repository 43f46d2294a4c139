"""deploy/: the systemd unit passes systemd's own checks and its command line runs and stops cleanly.

The unit's ExecStart is taken from the file, unescaped as systemd does (`$$` -> `$`, `%%` -> `%`),
pointed at this checkout's interpreter and a scratch state folder, and run by `sh` with the
environment file's variables, as systemd would; SIGTERM (what `systemctl stop` sends) must end it
with exit code 0 and a report. Nothing here runs on a Jetson (docs/jetson.md says so).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "sperm-edge.service"


def _exec_start() -> str:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    command = line.split("=", 1)[1]
    inner = re.fullmatch(r"/bin/sh -c '(.*)'", command.strip())
    assert inner, command
    return inner.group(1).replace("$$", "$").replace("%%", "%")


def _env_file() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (REPO / "deploy" / "sperm-edge.env").read_text().splitlines())
    return {k: v for k, v in (p for p in pairs if len(p) == 2) if not k.startswith("#")}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    unit = tmp_path / "sperm-edge.service"
    shutil.copyfile(UNIT, unit)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Unknown" not in done.stderr, done.stderr
    text = UNIT.read_text()
    for setting in ("Restart=on-failure", "KillSignal=SIGTERM", "TimeoutStopSec=", "WantedBy=multi-user.target"):
        assert setting in text


def _has_view() -> bool:
    done = subprocess.run([sys.executable, "-m", "sperm_edge", "run", "--help"], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})  # fmt: skip
    return "--view" in done.stdout


@pytest.mark.slow
def test_the_units_command_runs_and_stops_cleanly_on_sigterm(tiny_bundle, numbered_video, tmp_path: Path) -> None:
    if not _has_view():
        pytest.skip("`sperm-edge run --view` (the live view) is not in this checkout")
    state = tmp_path / "state"
    command = _exec_start()
    command = command.replace("/opt/sperm-edge/venv/bin/sperm-edge", f"{sys.executable} -m sperm_edge")
    command = command.replace("/var/lib/sperm-edge", str(state))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, **_env_file(), "PYTHONPATH": str(REPO), "SPERM_EDGE_CACHE": str(tmp_path / "cache"),
           "BUNDLE": str(tiny_bundle), "SOURCE": str(numbered_video), "VIEW": f"127.0.0.1:{port}",
           "EXTRA_ARGS": "--mode crop --loop --fps 60 --view-linger 0"}  # fmt: skip
    process = subprocess.Popen(["/bin/sh", "-c", command], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        events: list[Path] = []
        while time.monotonic() < deadline and process.poll() is None:
            events = list(state.glob("runs/*/events.jsonl"))
            if events and len(events[0].read_text().splitlines()) >= 25:
                break
            time.sleep(0.1)
        assert process.poll() is None, process.stdout.read()
        process.send_signal(signal.SIGTERM)  # `exec` in the unit: the signal reaches sperm-edge itself
        output, _ = process.communicate(timeout=30)  # the unit's TimeoutStopSec
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    report = json.loads((events[0].parent / "report.json").read_text())
    header, *cells = events[0].read_text().splitlines()  # the run header, then one cell a frame (crop mode)
    assert report["frames"] == len(cells) >= 25 and json.loads(header)["type"] == "run"
    assert report["status"] == "stopped"


def test_the_container_installs_the_runtime_extra_on_jetpack_6() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    base = re.search(r"^ARG L4T_JETPACK=(\S+)", text, re.M).group(1)
    assert base.startswith("nvcr.io/nvidia/l4t-jetpack:r36.") and "FROM ${L4T_JETPACK}" in text
    assert '".[runtime]"' in text and "torch" not in re.sub(r"#.*", "", text).replace("find_spec('torch')", "")
    assert "VOLUME" in text and "SPERM_EDGE_CACHE" in text
