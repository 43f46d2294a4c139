"""The view changes nothing a run writes; `sperm-edge view RUN_DIR` serves a finished run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sperm_edge.runtime.events import read_events
from tests.conftest import REPO, run_cli
from tests.view.conftest import free_port, get_json, request, wait_for

TIMING = {"created", "fps", "elapsed_s", "cpu_ms_per_frame", "stages_ms", "time", "t"}


def _without_timing(record: dict) -> dict:
    """The record without what differs between two runs of the same clip: timings, and the run's own identity."""
    return {k: v for k, v in record.items() if k not in TIMING and k != "run"}


def test_events_and_report_are_identical_with_and_without_the_view(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = clip
    runs = {}
    for name, extra in (("plain", []), ("view", ["--view", f"127.0.0.1:{free_port()}", "--view-linger", "0"])):
        out = tmp_path / name
        args = ["run", str(tiny_bundle), "--source", str(path), "--headless", "--out", str(out), "--explain",
                "none", "--truth", str(path.with_suffix(".json")), *extra]  # fmt: skip
        assert run_cli(args) == 0
        runs[name] = out
    events = {name: [_without_timing(e) for e in read_events(out / "events.jsonl")] for name, out in runs.items()}
    assert events["plain"] and events["plain"] == events["view"]
    reports = {name: _without_timing(json.loads((out / "report.json").read_text())) for name, out in runs.items()}
    assert reports["plain"]["cells"] > 0 and reports["plain"] == reports["view"]
    flagged = sorted(p.name for p in (runs["plain"] / "flagged").iterdir())
    assert flagged == sorted(p.name for p in (runs["view"] / "flagged").iterdir())
    assert not (runs["view"] / "explanations").exists()  # the view explains only what is clicked


def test_view_command_serves_a_finished_run(finished_run: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "sperm_edge", "view", str(finished_run), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = wait_for(lambda: get_json(port, "/api/status"), 30, "the view to answer")
        assert status["finished"] and status["cells"] == len(read_events(finished_run / "events.jsonl"))
        assert request(port, "/")[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_view_command_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    assert run_cli(["view", str(tmp_path)]) == 2
    assert run_cli(["view", str(tmp_path), "--host", "0.0.0.0"]) == 2


def test_the_runtime_and_cli_import_no_web_stack() -> None:
    code = (
        "import sys, sperm_edge.cli, sperm_edge.runtime.outputs, sperm_edge.runtime.pipeline; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn') or m == 'sperm_edge.view'))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
