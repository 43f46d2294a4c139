from __future__ import annotations

import json
from pathlib import Path

import pytest

from sperm_edge.runtime.events import read_events
from tests.conftest import run_cli


def test_run_writes_events_flags_explanations_and_report(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _truth = clip
    out = tmp_path / "out"
    code = run_cli(
        [
            "run",
            str(tiny_bundle),
            "--source",
            str(path),
            "--headless",
            "--explain",
            "flagged",
            "--out",
            str(out),
            "--max-frames",
            "10",
            "--truth",
            str(path.with_suffix(".json")),
        ]
    )
    assert code == 0
    header, *events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert header["type"] == "run" and header["bundle_sha256"] and header["source"] == str(path)
    assert events and all({"frame", "box", "class", "probs", "flagged", "track"} <= set(e) for e in events)
    report = json.loads((out / "report.json").read_text())
    assert {"counts", "percent_normal", "ci95", "fps"} <= set(report)
    assert sum(report["counts"].values()) == len(events) and report["fps"] > 0 and report["truth"]["cells"] > 0
    flagged = [e for e in events if e["flagged"]]
    assert flagged and report["explanations"]["explained"] == len(flagged)
    for event in flagged:
        name = f"{event['id']:06d}"
        assert (out / "explanations" / f"{name}.png").is_file()
        explanation = json.loads((out / "explanations" / f"{name}.json").read_text())
        assert explanation["event"] == event["id"] and 0.0 <= explanation["score"] <= 1.0
        assert explanation["source"] == "engine" and explanation["method"] == "LayerCAM"  # the bundle's explainer
        assert explanation["explained_class"] == event["class"] and event["explanation"] == f"explanations/{name}.png"
        assert set(explanation["heat"]) >= {"peak", "centroid", "central_share"}
    assert "![heatmap](explanations/" in (out / "report.md").read_text()

    # a flagged event round-trips to `sperm-edge explain`
    event = flagged[0]
    again = tmp_path / "again"
    assert (
        run_cli(["explain", str(tiny_bundle), "--event", str(event["id"]), "--run", str(out), "--out", str(again)]) == 0
    )
    redo = json.loads((again / f"{event['id']:06d}.json").read_text())
    original = json.loads((out / "explanations" / f"{event['id']:06d}.json").read_text())
    assert redo["class"] == original["class"] and abs(redo["score"] - original["score"]) < 1e-5
    # ... shown to the network in the view the stream used (`view`), explaining the event's class (the mean over
    # its sightings' views, which may differ from this one view's top class)
    assert 0 <= event["view"] < 8 and redo["explained_class"] == original["explained_class"] == event["class"]
    assert redo["source"] == "engine" and redo["heat"] == original["heat"]

    # the reference path: pytorch-grad-cam on the retained checkpoint, same files and fields
    reference = tmp_path / "reference"
    args = ["explain", str(tiny_bundle), "--event", str(event["id"]), "--run", str(out), "--out", str(reference)]
    assert run_cli([*args, "--torch"]) == 0
    torch_json = json.loads((reference / f"{event['id']:06d}.json").read_text())
    assert torch_json["source"] == "torch" and torch_json["method"] == "LayerCAM"  # the same method, by autograd
    assert torch_json["class"] == redo["class"] and abs(torch_json["score"] - redo["score"]) < 1e-4
    for key in ("peak", "centroid"):
        assert max(abs(a - b) for a, b in zip(torch_json["heat"][key], redo["heat"][key], strict=True)) < 0.02

    # a hand-edited log: a view that is no orientation is named, not a traceback
    log = out / "events.jsonl"
    edited = [
        {**e, "view": "2.5"} if e.get("id") == event["id"] else e for e in map(json.loads, log.read_text().splitlines())
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in edited))
    assert run_cli(args) == 2
    assert f"event {event['id']} in {log}: view must be an integer 0-7, got '2.5'" in capsys.readouterr().err.replace(
        "\n", ""
    )


def test_explain_one_image(tiny_bundle: Path, tmp_path: Path) -> None:
    from tests.runtime._bundle import make_crops

    crops = make_crops(tmp_path / "crops", n=4)
    image = next((crops / "02_Tapered").glob("*.png"))
    assert (
        run_cli(
            [
                "explain",
                str(tiny_bundle),
                "--image",
                str(image),
                "--out",
                str(
                    tmp_path / "x",
                ),
                "--target",
                "01_Normal",
            ]
        )
        == 0
    )
    info = json.loads((tmp_path / "x" / f"{image.stem}.json").read_text())
    assert info["explained_class"] == "01_Normal" and (tmp_path / "x" / f"{image.stem}.png").is_file()


def test_user_errors_are_one_line_and_exit_2(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    assert (
        run_cli(
            [
                "run",
                str(tiny_bundle),
                "--source",
                str(tmp_path / "nope.mp4"),
                "--headless",
                "--out",
                str(tmp_path / "o1"),
            ]
        )
        == 2
    )
    assert "source not found" in capsys.readouterr().err
    assert run_cli(["run", str(tiny_bundle), "--source", "57", "--headless", "--out", str(tmp_path / "o2")]) == 2
    assert "cannot open camera 57" in capsys.readouterr().err
    assert (
        run_cli(
            [
                "run",
                str(tiny_bundle),
                "--source",
                "57",
                "--backend",
                "ort-cuda",
                "--headless",
                "--out",
                str(tmp_path / "o3"),
            ]
        )
        == 2
    )
    assert "backend ort-cuda is not available here" in capsys.readouterr().err.replace("\n", " ")
    assert run_cli(["explain", str(tiny_bundle), "--event", "3", "--run", str(tmp_path)]) == 2
    assert "event log not found" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_finishes_the_frames_read_writes_the_report_and_exits_0(
    tiny_bundle: Path, numbered_video: Path, tmp_path: Path
) -> None:
    """What `systemctl stop` does to the service: SIGTERM to a real `sperm-edge run` on a looping source."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    args = [sys.executable, "-m", "sperm_edge", "run", str(tiny_bundle), "--source", str(numbered_video), "--loop",
            "--mode", "crop", "--headless", "--out", str(out), "--fps", "60"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        events = out / "events.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if events.is_file() and len(events.read_text().splitlines()) > 30:  # past one loop of the clip
                break
            time.sleep(0.1)
        assert process.poll() is None, process.stdout.read()
        process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        output, _ = process.communicate(timeout=20)
        took = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert took < 10, took
    report = json.loads((out / "report.json").read_text())
    header, *lines = events.read_text().splitlines()
    # every frame read was classified and logged (crop mode: one cell per frame)
    assert report["frames"] == report["source_stats"]["delivered"] == len(lines) == sum(report["counts"].values())
    assert json.loads(header)["type"] == "run" and report["status"] == "stopped"
    assert report["frames"] >= 30 and "SIGTERM" in output


def test_run_with_tta_finds_the_same_cells_and_records_it(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _truth = clip
    events = {}
    for tta in ("--tta", "--no-tta"):
        out = tmp_path / tta
        args = ["run", str(tiny_bundle), "--source", str(path), "--headless", "--explain", "none"]
        assert run_cli([*args, "--backend", "ort-cpu", "--max-frames", "6", "--no-track", tta, "--out", str(out)]) == 0
        events[tta] = read_events(out / "events.jsonl")
        report = json.loads((out / "report.json").read_text())
        assert ("tta" in report["backend"]) == (tta == "--tta")
    assert events["--tta"] and [e["box"] for e in events["--tta"]] == [e["box"] for e in events["--no-tta"]]
