"""Camera SDK sources against the SDKs' own emulators: pylon's camera emulation and Micro-Manager's DemoCamera.

pylon offers its emulator only when PYLON_CAMEMU is set before its transport-layer factory is first made,
so it is set here, when the test modules are collected (before any test runs); subprocesses get it too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time

import numpy as np
import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.sources import SourceOptions, open_source
from sperm_edge.runtime.sources.camera import CameraOptions, CameraRecord, to_bgr
from tests.conftest import run_cli

os.environ.setdefault("PYLON_CAMEMU", "1")

needs_pylon = pytest.mark.skipif(importlib.util.find_spec("pypylon") is None,
                                 reason="pypylon is not installed (pip install 'sperm-edge[pylon]')")  # fmt: skip
needs_mmcore = pytest.mark.skipif(
    importlib.util.find_spec("pymmcore_plus") is None or importlib.util.find_spec("mm_test_adapters") is None,
    reason="pymmcore-plus and mm-test-adapters are not installed (pip install 'sperm-edge[micromanager]')",
)
EVERY_FRAME = SourceOptions(latest_only=False, stall_timeout=5.0)


def test_options_come_from_the_query_and_bad_ones_are_named() -> None:
    options = CameraOptions.parse("exposure_us=2000&gain_db=-1.5&pixel_format=Mono8&fps=30&roi=0,8,640,480", "u")
    assert options == CameraOptions(2000.0, -1.5, "Mono8", 30.0, (0, 8, 640, 480))
    with pytest.raises(SpermEdgeError, match="unknown camera option 'exposure'"):
        CameraOptions.parse("exposure=5", "pylon://?exposure=5")
    with pytest.raises(SpermEdgeError, match="roi='1,2,3' .* is not x,y,width,height"):
        CameraOptions.parse("roi=1,2,3", "pylon://?roi=1,2,3")
    with pytest.raises(SpermEdgeError, match="fps='-3' .* is not a positive number"):
        CameraOptions.parse("fps=-3", "pylon://?fps=-3")


def test_pixel_formats_become_bgr_uint8() -> None:
    mono12 = np.full((4, 6), 4095, np.uint16)
    assert to_bgr(mono12, "Mono12", bits=12).tolist() == np.full((4, 6, 3), 255, np.uint8).tolist()
    assert to_bgr(np.full((4, 6), 7, np.uint8), "Mono8").shape == (4, 6, 3)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB order
    assert to_bgr(rgb, "RGB8Packed")[0, 0].tolist() == [0, 0, 200]
    bayer = np.zeros((4, 4), np.uint8)
    bayer[0::2, 0::2] = 255  # the R sites of an RG pattern
    assert to_bgr(bayer, "BayerRG8")[1, 1, 2] > 100 and to_bgr(bayer, "BayerRG8")[1, 1, 0] == 0
    with pytest.raises(SpermEdgeError, match="unsupported Bayer format"):
        to_bgr(bayer, "BayerXY8")


def test_gaps_in_the_cameras_frame_ids_are_its_drops() -> None:
    record = CameraRecord("pylon")
    record.opened_again()
    for frame_id in (0, 1, 2, 5, 6):
        record.frame(frame_id)
    assert record.dropped_by_camera == 2 and record.frames == 5
    record.opened_again()  # a reopened camera numbers afresh: no false drop
    record.frame(0)
    assert record.dropped_by_camera == 2 and record.to_dict()["opened"] == 2


def _read(source, n: int) -> list:
    frames = iter(source)
    return [next(frames) for _ in range(n)]


class Skipping:
    """The SDK object `real` as the source's grabber uses it, except that `method` throws away the next `n` frames
    it really took from the camera: frames lost on purpose, between the camera and the source."""

    def __init__(self, real, method: str, n: int, good) -> None:
        self._real, self._method, self.left, self._good = real, method, n, good

    def __getattr__(self, name: str):
        if name != self._method:
            return getattr(self._real, name)

        def take(*args):
            result = getattr(self._real, name)(*args)
            while self.left and self._good(result):
                self.left -= 1
                if hasattr(result, "Release"):
                    result.Release()
                result = getattr(self._real, name)(*args)
            return result

        return take


@needs_pylon
def test_pylon_emulator_applies_settings_counts_failed_buffers_and_skips() -> None:
    uri = "pylon://0815-0000?exposure_us=5000&pixel_format=Mono8&roi=0,0,640,480&fps=25"
    with open_source(uri, EVERY_FRAME) as source:
        first = _read(source, 5)
        camera = source._handle.cap.camera  # the pylon camera itself: the test reaches the SDK beside the source
        camera.ForceFailedBufferCount.Value = 3
        camera.ForceFailedBuffer.Execute()
        after_failures = _read(source, 10)
        before = source.camera["dropped_by_camera"]
        capture, skipped = source._handle.cap, 4
        capture.camera = Skipping(camera, "RetrieveResult", skipped, lambda r: r.IsValid() and r.GrabSucceeded())
        deadline = time.monotonic() + 10
        while capture.camera.left and time.monotonic() < deadline:
            time.sleep(0.01)
        last = _read(source, 10)
    record = source.camera
    assert record["sdk"] == "pylon" and record["model"] == "Emulation" and record["serial"] == "0815-0000"
    settings = record["settings"]
    assert settings["width"] == 640 and settings["height"] == 480 and settings["pixel_format"] == "Mono8"
    assert settings["exposure_us"] == 5000 and settings["fps"] == 25
    assert record["failed_buffers"] == 3
    assert all(f.image.shape == (480, 640, 3) for f in first + after_failures + last)
    ids = [f.meta["camera_frame_id"] for f in first + after_failures + last]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # monotonic, never repeated
    assert record["dropped_by_camera"] - before == skipped and capture.camera.left == 0


@needs_mmcore
def test_micromanager_demo_camera_reads_back_settings_and_counts_skips() -> None:
    with open_source("mmcore://demo?exposure_us=20000&roi=0,0,256,200", EVERY_FRAME) as source:
        first = _read(source, 5)
        capture, skipped = source._handle.cap, 3
        before = source.camera["dropped_by_camera"]
        capture.core = Skipping(capture.core, "popNextImageAndMD", skipped, lambda r: True)
        deadline = time.monotonic() + 10
        while capture.core.left and time.monotonic() < deadline:
            time.sleep(0.01)
        last = _read(source, 8)
    record = source.camera
    assert record["sdk"] == "micromanager" and "DemoCamera" in record["model"]
    assert record["settings"]["exposure_us"] == 20000 and record["settings"]["roi"] == [0, 0, 256, 200]
    assert all(f.image.shape == (200, 256, 3) and f.image.dtype == np.uint8 for f in first + last)
    ids = [f.meta["camera_frame_id"] for f in first + last]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert record["dropped_by_camera"] - before == skipped and capture.core.left == 0


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        pytest.param("pylon://12345678", "no Basler camera with serial 12345678 (pylon sees: Emulation 0815-0000)",
                     marks=needs_pylon),
        pytest.param("pylon://?gain_db=999", "the camera refused gain_db=999", marks=needs_pylon),
        pytest.param("mmcore:///nowhere/scope.cfg", "Micro-Manager configuration not found: /nowhere/scope.cfg",
                     marks=needs_mmcore),
        pytest.param("mmcore://demo?fps=30", "Micro-Manager cameras take no frame rate", marks=needs_mmcore),
        pytest.param("mmcore://demo?pixel_format=RGB64", "the camera refused pixel_format=RGB64", marks=needs_mmcore),
    ],
)  # fmt: skip
def test_a_camera_that_cannot_be_opened_is_one_line_and_exit_2(tiny_bundle, tmp_path, capsys, uri, message) -> None:
    args = ["run", str(tiny_bundle), "--source", uri, "--headless", "--out", str(tmp_path / "out"), "--max-frames", "5"]
    assert run_cli(args) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert message in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("uri", [pytest.param("pylon://?fps=60", marks=needs_pylon),
                                 pytest.param("mmcore://demo?exposure_us=10000", marks=needs_mmcore)])  # fmt: skip
def test_a_field_mode_run_of_300_frames_from_each_sdk_records_its_camera(tiny_bundle, tmp_path, uri) -> None:
    out = tmp_path / "run"
    args = ["run", str(tiny_bundle), "--source", uri, "--headless", "--out", str(out), "--max-frames", "300",
            "--backend", "ort-cpu"]  # fmt: skip
    assert run_cli(args) == 0
    report = json.loads((out / "report.json").read_text())
    camera = report["camera"]
    assert report["status"] == "complete" and report["frames"] == 300
    assert camera["frames"] >= 300 and camera["settings"] and camera["model"]
    assert camera["dropped_by_camera"] >= 0 and camera["failed_buffers"] == 0
    # crop mode: every frame is a cell, so every event carries the camera's id and timestamp for its frame
    crops = tmp_path / "crops"
    assert run_cli(["run", str(tiny_bundle), "--source", uri, "--headless", "--out", str(crops), "--max-frames", "20",
                    "--mode", "crop", "--backend", "ort-cpu"]) == 0  # fmt: skip
    events = [json.loads(line) for line in (crops / "events.jsonl").read_text().splitlines()[1:]]
    cropped = json.loads((crops / "report.json").read_text())
    # a live camera keeps only its newest frame: frames the pipeline was too busy for are dropped and counted
    assert cropped["frames"] + cropped["queue_dropped"] == 20 and len(events) == cropped["frames"] > 0
    assert all("camera_frame_id" in e and "camera_timestamp" in e for e in events)
    ids = [e["camera_frame_id"] for e in events]
    assert ids == sorted(ids)


@needs_pylon
def test_a_camera_that_stops_delivering_is_reopened_by_the_source() -> None:
    options = SourceOptions(latest_only=True, stall_timeout=2.0, backoff=0.1)
    with open_source("pylon://?fps=50", options) as source:
        _read(source, 5)
        source._handle.cap.camera.StopGrabbing()  # the camera stops: the next grab fails, the source reopens it
        after = _read(source, 10)
    assert source.stats.reopens == 1 and source.stats.gaps[0].reason == "no frame"
    assert source.camera["opened"] == 2 and len(after) == 10
