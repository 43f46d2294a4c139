"""`sperm-edge run --view` in its own process, over HTTP: tokens, the MJPEG stream, counts that move, finish."""

from __future__ import annotations

import json
from pathlib import Path

from sperm_edge.runtime.events import read_events
from tests.conftest import run_cli
from tests.view.conftest import get_json, live_run, read_mjpeg, request, wait_for

TOKEN = "s3cret-live-token"


def test_live_run_with_a_token(tiny_bundle: Path, watch_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "live"
    with live_run(tiny_bundle, watch_clip, out, "--fps", "5", "--view-linger", "0", token=TOKEN) as run:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        port = run.port
        assert request(port, "/api/status")[0] == 401
        assert request(port, "/api/status", headers={"Authorization": "Bearer not-the-token"})[0] == 401
        assert request(port, "/stream.mjpg")[0] == 401
        first = get_json(port, "/api/status", headers=auth)
        assert first["live"] and not first["finished"] and first["view"] == {"clients": 0, "encoded": 0}

        kind, parts = read_mjpeg(port, f"/stream.mjpg?token={TOKEN}", frames=3)
        assert kind.startswith("multipart/x-mixed-replace") and len(parts) == 3
        assert all(p[:2] == b"\xff\xd8" and p[-2:] == b"\xff\xd9" for p in parts)

        moved = wait_for(lambda: get_json(port, "/api/status", headers=auth)["cells"] > first["cells"], 40,
                         "cells to be counted")  # fmt: skip
        assert moved
        status = get_json(port, "/api/status", headers=auth)
        assert status["frames"] > first["frames"] and status["fps"] > 0 and status["view"]["encoded"] >= 3
        assert sum(status["counts"].values()) == status["cells"]
        assert request(port, "/api/explain/99999", method="POST", headers=auth)[0] == 404

        assert get_json(port, "/api/pause", method="POST", headers=auth)["paused"]
        assert get_json(port, "/api/status", headers=auth)["paused"]
        assert not get_json(port, "/api/resume", method="POST", headers=auth)["paused"]
        assert request(port, "/report.pdf", headers=auth)[0] == 409  # not before the sample is finished
        assert request(port, "/api/finish", method="POST", headers=auth)[0] == 200
        assert run.wait(60) == 0, run.output()[-2000:]
    report = json.loads((out / "report.json").read_text())
    events = read_events(out / "events.jsonl")
    assert report["cells"] == len(events) > 0
    assert report["frames"] < 90  # finished before the clip's end


def test_view_refuses_non_loopback_without_a_token(tiny_bundle: Path, watch_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "open"
    base = ["run", str(tiny_bundle), "--source", str(watch_clip), "--headless", "--out", str(out)]
    assert run_cli([*base, "--view", "0.0.0.0:0"]) == 2
    assert run_cli([*base, "--token", "abcdefghij"]) == 2  # a token without --view
    assert run_cli([*base, "--view", "127.0.0.1:notaport"]) == 2
    assert not out.exists()  # refused before anything was written


def test_token_auto_is_written_to_a_private_file_and_masked_in_the_log(
    tiny_bundle: Path, watch_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "auto"
    with live_run(tiny_bundle, watch_clip, out, "--max-frames", "30", "--fps", "10",
                  "--view-linger", "0", token="auto") as run:  # fmt: skip
        wait_for(lambda: "?token=" in run.output() and run.output(), 30, "the URL")
        token = (out / "view_token").read_text().strip()
        assert len(token) >= 20 and token not in run.output() and f"?token={token[:4]}…" in run.output()
        assert (out / "view_token").stat().st_mode & 0o077 == 0  # its owner's only
        assert request(run.port, f"/api/status?token={token}")[0] == 200
        assert request(run.port, "/api/status")[0] == 401
        assert run.wait(60) == 0
