"""The routes over a finished run folder (`RunView`, a real uvicorn server on a free loopback port)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sperm_edge.runtime.events import read_events
from sperm_edge.view import RunView
from tests.view.conftest import get_json, request

STATUS_KEYS = {"frames", "fps", "counts", "cells", "flagged", "percent_normal", "ci95", "paused", "finished"}


@pytest.fixture
def served(finished_run: Path):
    with RunView(finished_run, port=0) as view:
        yield view.port, finished_run


def test_page_is_self_contained(served) -> None:
    port, _ = served
    status, headers, body = request(port, "/")
    page = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'sha256-" in headers["content-security-policy"]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from a CDN
    assert "/*SCRIPT*/" not in page and "fetch(" in page and "/api/status" in page


def test_status_and_events_match_the_run(served) -> None:
    port, run = served
    report = json.loads((run / "report.json").read_text())
    events = read_events(run / "events.jsonl")
    status = get_json(port, "/api/status")
    assert STATUS_KEYS <= set(status)
    assert status["finished"] and not status["live"] and not status["paused"]
    for key in ("counts", "cells", "flagged", "percent_normal", "ci95", "frames"):
        assert status[key] == report[key], key
    flagged = [e["id"] for e in events if e["flagged"]]
    assert flagged and set(status["explained"]) == set(flagged)  # the run explained every flagged cell

    assert get_json(port, "/api/events") == events == get_json(port, "/api/events?since=0")
    middle = events[len(events) // 2]["id"]
    assert get_json(port, f"/api/events?since={middle}") == events[len(events) // 2 + 1 :]
    assert get_json(port, f"/api/events?since={events[-1]['id']}") == []
    assert request(port, "/api/events?since=987654")[0] == 404
    assert request(port, "/api/events?since=-1")[0] == 400


def test_images_explain_and_buttons(served) -> None:
    port, run = served
    event = next(e for e in read_events(run / "events.jsonl") if e["flagged"])
    status, headers, body = request(port, f"/flagged/{event['id']}.png")
    assert status == 200 and body == (run / event["crop"]).read_bytes() and headers["content-type"] == "image/png"
    padded = f"{event['id']:06d}"
    assert request(port, f"/explanations/{padded}.png")[2] == (run / "explanations" / f"{padded}.png").read_bytes()
    assert get_json(port, f"/api/explain/{event['id']}", method="POST") == {"id": event["id"], "state": "ready"}
    assert request(port, "/api/explain/99999", method="POST")[0] == 404
    assert request(port, "/api/explain/0", method="POST")[0] == 404
    assert request(port, "/explanations/99999.png")[0] == 404
    for action in ("pause", "resume", "finish"):
        assert request(port, f"/api/{action}", method="POST")[0] == 409  # a finished run
    assert request(port, "/stream.mjpg")[0] == 404  # no stream over a finished run


@pytest.mark.parametrize(
    "path",
    ["/flagged/../report.json", "/flagged/..%2Freport.json", "/flagged/%2e%2e%2freport.json",
     "/flagged/..%2F..%2F..%2Fetc%2Fpasswd", "/explanations/000001.png/../../events.jsonl", "/flagged/",
     "/flagged", "/explanations/", "/report.json", "/events.jsonl", "/static/app.js", "/flagged/1.json",
     "/flagged/1.frame.jpg", "/flagged/-1.png", "/..%2f..%2fetc%2fpasswd"],
)  # fmt: skip
def test_no_traversal_and_no_listing(served, path: str) -> None:
    port, _ = served
    status, _, body = request(port, path)
    assert status == 404, (path, status, body[:100])


def test_a_finished_sample_serves_its_pdf_report(served) -> None:
    port, run = served
    status, headers, body = request(port, "/report.pdf", timeout=60)
    assert status == 200 and headers["content-type"] == "application/pdf" and body.startswith(b"%PDF")
    assert (run / "report.pdf").read_bytes() == body
    assert request(port, "/report.pdf", timeout=60)[2] == body  # made once, served again
