"""Live sources that stall, die or wedge: reopened after the stall timeout, and never released mid-read.

The network cases use a real MPEG-TS stream from a local ffmpeg server (killed, and frozen with
SIGSTOP while its client's connection stays open); the wedged-driver case wraps a real
`cv2.VideoCapture` whose read stops returning, which is what the watchdog is for.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import pytest

from sperm_edge.runtime.sources import CaptureSource, SourceOptions, open_capture, open_source, parse_uri
from tests.runtime._stream_server import StreamServer


class Wedged:
    """A real capture whose read() blocks (a wedged driver) after `n` frames until `gate` is set."""

    def __init__(self, path: Path, n: int) -> None:
        self.cap = cv2.VideoCapture(str(path))
        self.n = n
        self.gate = threading.Event()
        self.reading = False
        self.released = False
        self.released_during_read = False

    def read(self):
        if self.n <= 0:
            self.reading = True
            self.gate.wait()
            self.reading = False
            return False, None
        self.n -= 1
        return self.cap.read()

    def release(self) -> None:
        self.released_during_read |= self.reading
        self.released = True
        self.cap.release()

    def __getattr__(self, name: str):
        return getattr(self.cap, name)


def _wedging_opener(n: int):
    made: list[Wedged] = []

    def opener(uri, options):
        if not made:
            made.append(Wedged(Path(uri.location), n))
            return made[0]
        return open_capture(uri, options)

    return opener, made


def _first_frame_after_reopen(source, frames, moment: float, limit: float) -> float | None:
    """Seconds from `moment` to the first frame after the source reopened (None if none within `limit` s).

    Frames already in the socket's buffer still arrive after a freeze: they do not count."""
    for frame in frames:
        if source.stats.reopens and frame.timestamp > moment:
            return frame.timestamp - moment
        if time.monotonic() - moment > limit:
            return None
    return None


def test_sources_copy_their_options(numbered_video: Path, tmp_path: Path) -> None:
    options = SourceOptions(width=32, height=24)
    before = asdict(options)
    live = CaptureSource(parse_uri(numbered_video), options)
    images = open_source(tmp_path, options)
    assert asdict(options) == before  # not live=..., latest_only=... of the sources
    assert live.options is not options and images.options is not options
    assert live.options.width == 32 and images.options.live is False


def test_a_wedged_read_is_left_behind_and_the_source_reopened(numbered_video: Path) -> None:
    opener, made = _wedging_opener(3)
    options = SourceOptions(live=True, latest_only=True, stall_timeout=0.5, backoff=0.01)
    start = time.monotonic()
    with CaptureSource(parse_uri(numbered_video), options, opener=opener) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 6:
                break
        elapsed = time.monotonic() - start
    wedged = made[0]
    assert source.stats.reopens == 1 and "stalled" in source.stats.gaps[0].reason
    assert elapsed < 4.0  # the stall limit (0.5 s) plus a reopen, not forever
    assert wedged.reading and not wedged.released  # nobody released it under the blocked read
    wedged.gate.set()  # the driver wakes up: the reader releases its own capture
    deadline = time.monotonic() + 3
    while not wedged.released and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wedged.released and not wedged.released_during_read


def test_closing_a_source_stuck_in_read_returns_without_releasing_under_it(numbered_video: Path) -> None:
    opener, made = _wedging_opener(1)
    options = SourceOptions(live=True, latest_only=True, stall_timeout=60)
    source = CaptureSource(parse_uri(numbered_video), options, opener=opener).__enter__()
    next(iter(source))
    time.sleep(0.2)  # the grabber is now inside the blocked read
    start = time.monotonic()
    source.close()
    assert time.monotonic() - start < 2.5
    wedged = made[0]
    assert not wedged.released
    wedged.gate.set()
    deadline = time.monotonic() + 3
    while not wedged.released and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wedged.released and not wedged.released_during_read


@pytest.mark.slow
def test_a_frozen_stream_is_reopened_after_the_stall_timeout() -> None:
    with StreamServer() as server:
        options = SourceOptions(stall_timeout=1.5, backoff=0.1, reopen_attempts=-1)
        with open_source(server.url, options) as source:
            frames = iter(source)
            for _ in range(10):
                next(frames)
            frozen = server.freeze()  # connection open, no frames
            server.start()  # the camera comes back for whoever reconnects
            moment = time.monotonic()
            took = _first_frame_after_reopen(source, frames, moment, limit=15)
            server.thaw(frozen)
        assert took is not None and took < 1.5 + 4.0, took  # the stall timeout plus a reconnect, not the freeze
        assert source.stats.reopens == 1 and source.stats.gaps[0].seconds > 0.5


@pytest.mark.slow
def test_a_frozen_stream_without_opencv_timeouts_is_caught_by_the_watchdog() -> None:
    def no_timeouts(uri, options):  # FFmpeg's default read timeout is 30 s: the watchdog must act first
        return cv2.VideoCapture(uri.location, cv2.CAP_FFMPEG)

    with StreamServer() as server:
        options = SourceOptions(stall_timeout=1.5, backoff=0.1, reopen_attempts=-1)
        with CaptureSource(parse_uri(server.url), options, opener=no_timeouts) as source:
            frames = iter(source)
            for _ in range(10):
                next(frames)
            frozen = server.freeze()
            server.start()
            took = _first_frame_after_reopen(source, frames, time.monotonic(), limit=15)
            server.thaw(frozen)  # the left-behind read now returns and releases its capture
        assert took is not None and took < 1.5 + 4.0, took
        assert "stalled" in source.stats.gaps[0].reason


@pytest.mark.slow
def test_a_killed_stream_server_is_reconnected_when_it_comes_back() -> None:
    with StreamServer() as server:
        options = SourceOptions(stall_timeout=1.5, backoff=0.2, reopen_attempts=-1)
        with open_source(server.url, options) as source:
            frames = iter(source)
            for _ in range(10):
                next(frames)
            server.kill()
            moment = time.monotonic()
            threading.Timer(1.0, server.start).start()  # back a second later
            took = _first_frame_after_reopen(source, frames, moment, limit=15)
        assert took is not None and took < 8.0, took
        assert source.stats.reopens >= 1 and source.stats.error is None


def test_a_file_read_newest_only_ends_at_its_end_or_loops(numbered_video: Path) -> None:
    with CaptureSource(parse_uri(numbered_video), SourceOptions(latest_only=True)) as source:
        assert source.threaded and len(list(source)) <= 20
    assert source.stats.reopens == 0
    with CaptureSource(parse_uri(numbered_video), SourceOptions(latest_only=True, loop=True)) as source:
        frames = 0
        for frames, _frame in enumerate(source, start=1):  # noqa: B007
            if frames == 45:
                break
    assert frames == 45 and source.stats.reopens == 0
