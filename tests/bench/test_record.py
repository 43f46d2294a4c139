"""The benchmark record: rows with the machine, the load around each timing, the command and the commit."""

from __future__ import annotations

import json
from pathlib import Path

from sperm_edge.bench.record import BenchmarkRecord, git_commit, load_line


def test_a_record_carries_the_machine_the_load_and_the_commit(tmp_path: Path) -> None:
    record = BenchmarkRecord.start(["bench.py", "--fast"])
    with record.timing() as load:
        sum(range(10_000))
    assert set(load) == {"load_before", "load_after", "other_cpu"} and load["load_after"] is not None
    result = record.write(tmp_path / "out" / "x.json", [{"fps": 1.0, **load}], {"frames": 3},
                          lambda r: f"# x\n\n{load_line(r)}\n", extra_field=7)  # fmt: skip
    written = json.loads((tmp_path / "out" / "x.json").read_text())
    assert written == json.loads(json.dumps(result)) and written["extra_field"] == 7
    assert written["command"].endswith("bench.py --fast") and written["commit"] == git_commit()
    assert written["cores"] >= 1 and written["cpu"]["model"] and written["rows"][0]["fps"] == 1.0
    assert written["under_load"] == (written["peak_other_cpu"] > 0.25) and written["peak_other_cpu"] >= 0
    assert (tmp_path / "out" / "x.md").read_text().startswith("# x\n\nCommand: `")


def test_a_neighbour_busy_during_a_timing_marks_the_record(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    record = BenchmarkRecord.start([])
    with record.timing() as alone:  # long enough that clock ticks (10 ms) are noise, not the figure
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            pass  # this process's own work is not a neighbour's
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with record.timing() as shared:
            time.sleep(1.5)
    finally:
        neighbour.kill()
        neighbour.wait()
    # a busy neighbour holds about one core; what else the machine runs (CI's own processes) shows in both
    assert shared["other_cpu"] > alone["other_cpu"] + 0.6 and shared["other_cpu"] > 0.25
    result = record.write(tmp_path / "x.json", [], markdown=load_line)
    assert result["under_load"] and "not a headline figure" in (tmp_path / "x.md").read_text()


def test_outside_a_git_checkout_the_commit_is_none(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
