"""Sources read through `cv2.VideoCapture`: video files, cameras (V4L2, CSI), network streams, GStreamer.

Live sources keep only the newest frame by default: a grabber thread reads continuously and the
consumer takes whatever is newest, so a slow consumer drops frames instead of lagging further
behind. A live source that stops delivering is reopened with exponential back-off and the gap is
recorded. A file ends at its last frame; a read that fails before that reopens the file once and
seeks to where it stopped.
"""

from __future__ import annotations

import glob
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.sources.base import Gap, SourceOptions, VideoSource
from sperm_edge.runtime.sources.uri import SourceURI, csi_pipeline

log = logging.getLogger(__name__)


class Capture(Protocol):
    """The part of `cv2.VideoCapture` a source uses."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...
    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...


Opener = Callable[[SourceURI, SourceOptions], Capture]


def _has_gstreamer() -> bool:
    return any("GStreamer" in line and "YES" in line for line in cv2.getBuildInformation().splitlines())


def open_capture(uri: SourceURI, options: SourceOptions) -> Capture:
    """Open `uri` with OpenCV and apply the requested mode; fail with a message saying what is wrong."""
    if uri.scheme in ("csi", "gst") and not _has_gstreamer():
        raise SpermEdgeError(
            f"{uri.raw} needs OpenCV built with GStreamer (on Jetson: JetPack's python3-opencv); this OpenCV has none"
        )
    if uri.scheme in ("device", "v4l2"):
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(uri.index, api)
    elif uri.scheme == "csi":
        cap = cv2.VideoCapture(csi_pipeline(uri.index, options.width, options.height, options.fps), cv2.CAP_GSTREAMER)
    elif uri.scheme == "gst":
        cap = cv2.VideoCapture(uri.location, cv2.CAP_GSTREAMER)
    elif uri.scheme in ("rtsp", "rtmp", "http"):
        cap = cv2.VideoCapture(uri.location, cv2.CAP_FFMPEG)
    else:
        cap = cv2.VideoCapture(uri.location)
    if not cap.isOpened():
        cap.release()
        raise SpermEdgeError(_open_failure(uri))
    if uri.live:
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if uri.scheme in ("device", "v4l2"):
            if options.width and options.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, options.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, options.height)
            if options.fps:
                cap.set(cv2.CAP_PROP_FPS, options.fps)
    return cap


def _open_failure(uri: SourceURI) -> str:
    if uri.scheme in ("device", "v4l2"):
        present = sorted(glob.glob("/dev/video*"))
        return (
            f"cannot open camera {uri.index}: no such device, or it is busy "
            f"(video devices here: {', '.join(present) if present else 'none'})"
        )
    if uri.scheme in ("rtsp", "rtmp", "http"):
        return f"cannot open stream {uri.location}: unreachable, wrong address or unsupported codec"
    if uri.scheme in ("csi", "gst"):
        return f"cannot start GStreamer pipeline for {uri.raw} (is the camera connected and nvargus-daemon running?)"
    return f"cannot open video {uri.location}: not a video OpenCV can decode, or corrupt"


class CaptureSource(VideoSource):
    """Frames from `cv2.VideoCapture` (or any `Capture` that `opener` returns)."""

    def __init__(self, uri: SourceURI, options: SourceOptions | None = None, opener: Opener = open_capture) -> None:
        options = options or SourceOptions()
        if options.live is None:
            options.live = uri.live
        if options.latest_only is None:
            options.latest_only = bool(options.live)
        super().__init__(uri.raw, options)
        self.parsed = uri
        self._opener = opener
        self._cap: Capture | None = None
        self._pos = 0  # frames read from the capture (a file's position)
        self._count = 0  # a file's frame count (0: unknown)
        self._native_fps: float | None = None
        # latest-only state, shared with the grabber thread
        self._cond = threading.Condition()
        self._slot: np.ndarray | None = None
        self._seq = 0
        self._taken = 0
        self._ended = False
        self._grabber: threading.Thread | None = None

    @property
    def fps(self) -> float | None:
        return self.options.fps or self._native_fps

    # -- open / close ----------------------------------------------------------------------------
    def _open_impl(self) -> None:
        self._cap = self._opener(self.parsed, self.options)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self._native_fps = fps if fps and 0 < fps < 1000 else None
        if not self.live:
            self._count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self._pos = 0
        self._ended = False
        self._seq = self._taken = 0
        if self.options.latest_only:
            self._grabber = threading.Thread(target=self._grab_loop, name=f"grab {self.uri}", daemon=True)
            self._grabber.start()

    def _close_impl(self) -> None:
        with self._cond:
            self._cond.notify_all()
        if self._grabber is not None:
            self._grabber.join(timeout=5.0)
            self._grabber = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    # -- reading ---------------------------------------------------------------------------------
    def _read_impl(self) -> np.ndarray | None:
        if self.options.latest_only:
            return self._take_latest()
        return self._read_next()

    def _read_next(self) -> np.ndarray | None:
        """Synchronous read: every frame, in order."""
        image = self._read_once()
        if image is not None:
            return image
        if self.live:
            return self._read_once() if self._reconnect("read failed") else None
        if self._count and self._pos < self._count - 1 and not self._stop.is_set():
            # failed before the end of the file: reopen once, seek back, and carry on
            if self._reconnect(f"read failed at frame {self._pos} of {self._count}", seek=self._pos, attempts=1):
                image = self._read_once()
                if image is not None:
                    return image
        if self.options.loop and self._pos > 0 and self._reconnect("end of file (looping)", seek=0, gap=False):
            return self._read_once()
        return None

    def _read_once(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        self._pos += 1
        return image

    def _reconnect(self, reason: str, seek: int | None = None, attempts: int | None = None, gap: bool = True) -> bool:
        """Release and reopen with back-off; True when a capture is open again."""
        attempts = self.options.reopen_attempts if attempts is None else attempts
        started = time.monotonic()
        delay = self.options.backoff
        tries = 0
        log.warning("%s: %s; reopening", self.uri, reason)
        while not self._stop.is_set() and (attempts < 0 or tries < attempts):
            tries += 1
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            if gap and self._stop.wait(delay):
                break
            delay = min(delay * 2, self.options.max_backoff)
            try:
                self._cap = self._opener(self.parsed, self.options)
            except SpermEdgeError as err:
                log.warning("%s: reopen %d failed: %s", self.uri, tries, err)
                continue
            if seek is not None:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, seek)
                self._pos = seek
            if gap:
                self.stats.reopens += 1
                self.stats.gaps.append(Gap(self.stats.delivered, time.monotonic() - started, reason))
                log.info("%s: reopened after %.2f s", self.uri, time.monotonic() - started)
            return True
        if gap and not self._stop.is_set():
            self.stats.error = f"{reason}; gave up after {tries} reopen attempts"
            log.error("%s: %s", self.uri, self.stats.error)
        return False

    # -- latest-only -----------------------------------------------------------------------------
    def _grab_loop(self) -> None:
        """Grabber thread: keep the newest frame in the slot, reopening the source when it drops."""
        while not self._stop.is_set():
            image = self._read_once()
            if image is None and not (self._reconnect("no frame") and not self._stop.is_set()):
                break
            if image is None:
                continue
            with self._cond:
                if self._seq > self._taken:
                    self.stats.dropped += 1
                self._slot = image
                self._seq += 1
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _take_latest(self) -> np.ndarray | None:
        waited = 0.0
        with self._cond:
            while self._seq == self._taken and not self._ended and not self._stop.is_set():
                if not self._cond.wait(timeout=0.5):
                    waited += 0.5
                    if waited >= self.options.read_timeout:
                        log.warning("%s: no frame for %.1f s", self.uri, waited)
                        waited = 0.0
            if self._seq == self._taken:
                return None
            self._taken = self._seq
            image, self._slot = self._slot, None
            return image
