"""The faults benchmark: its reading of a run's log, and two real rows end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks._scripts import load_script


def test_the_log_reads_to_its_last_complete_line(tmp_path: Path) -> None:
    faults = load_script("faults")
    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"type": "run", "run_id": "r"}\n{"id": 1}\n{"id": 2, "cla')  # cut mid-line by a SIGKILL
    assert faults.read_log(log) == {"lines": 2, "bad_lines": 0, "partial_tail_bytes": 14, "header": True,
                                    "intact": True}  # fmt: skip
    log.write_bytes(b'{"id": 1}\nnot json\n')
    state = faults.read_log(log)
    assert not state["intact"] and state["bad_lines"] == 1 and not state["header"]
    assert not faults.read_log(tmp_path / "missing.jsonl")["intact"]


@pytest.mark.slow
def test_a_killed_run_and_a_file_size_limit_each_leave_a_report(tmp_path_factory, tmp_path: Path) -> None:
    from tests.runtime._bundle import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path_factory.getbasetemp())
    out = tmp_path / "results"
    code = load_script("faults").main(["--bundle", str(bundle), "--only", "sigkill", "file_size", "--out", str(out)])
    result = json.loads((out / "faults.json").read_text())
    killed, limited = result["rows"]
    assert killed["exit_code"] == -9 and killed["report"] == "rebuilt by sperm-edge report"
    assert killed["status"] == "aborted" and killed["events"]["intact"] and killed["events"]["lines"] > 50
    assert limited["exit_code"] not in (0, -9) and limited["report"] == "written at once"
    assert limited["status"] == "aborted" and "File too large" in limited["error"] and limited["events"]["intact"]
    assert code == (0 if result["ok"] else 1) == (0 if killed["ok"] and limited["ok"] else 1)
    markdown = (out / "faults.md").read_text()
    assert "| killed |" in markdown and "| file size limit |" in markdown and "Command: `" in markdown
