"""Frames, stream options and the base class every frame source implements.

A source is a context manager that opens its device or files on enter and releases them on exit,
and an iterator of `Frame`s (RGB uint8) that ends when the stream ends. The options are defined
once here and shared by every program (jetson-inference's `videoSource` options, in spirit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import to_rgb8

log = logging.getLogger(__name__)

#: what a source's reader hands over: an image, or (image, name), or (image, name, camera metadata)
RawFrame = np.ndarray | tuple[np.ndarray, str] | tuple[np.ndarray, str, dict]


@dataclass
class SourceOptions:
    """How to open a source.

    `width`/`height`/`fps` are requested from devices (which may pick the nearest mode they
    support); files and images are resized to `width` x `height` when both are given, and paced at
    `fps` when it is given (to replay a recording like a camera). `latest_only` keeps only the
    newest frame (no growing lag): by default on for live sources, off for files, which process
    every frame. `live` overrides what the URI implies. A live source that stops delivering is
    reopened up to `reopen_attempts` times in a row (-1: forever), waiting `backoff` seconds,
    doubling up to `max_backoff`. A live source that stalls (connection open, no frames) counts as
    stopped after `stall_timeout` seconds. Sources copy the options they are given: the caller's
    object is never changed.
    """

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    latest_only: bool | None = None
    live: bool | None = None
    loop: bool = False
    reopen_attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 8.0
    stall_timeout: float = 5.0


@dataclass
class Frame:
    """One captured frame: RGB uint8 H x W x 3, its sequence number and capture time (time.monotonic)."""

    index: int
    image: np.ndarray
    timestamp: float
    name: str = ""  # file name for image sources, else empty
    meta: dict | None = None  # what a camera SDK says of the frame: camera_frame_id, camera_timestamp

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]


@dataclass
class Gap:
    """A stretch without frames: from the last good frame to the first frame after reopening."""

    after_frame: int
    seconds: float
    reason: str

    def to_dict(self) -> dict:
        return {"after_frame": self.after_frame, "seconds": round(self.seconds, 3), "reason": self.reason}


@dataclass
class SourceStats:
    """What happened to the stream: delivered, dropped (latest-only), skipped (unconvertible) frames, reopens."""

    delivered: int = 0
    dropped: int = 0
    skipped: int = 0
    reopens: int = 0
    gaps: list[Gap] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "delivered": self.delivered,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "reopens": self.reopens,
            "gaps": [g.to_dict() for g in self.gaps],
            "error": self.error,
        }


class VideoSource:
    """Base class: `with source: for frame in source: ...`.

    Subclasses implement `_open_impl`, `_close_impl` and `_read_impl` (the next raw frame, or None
    at the end of the stream). The base converts frames to RGB uint8 (grey, 16-bit and BGRA
    are converted; what cannot be converted is skipped and counted), resizes and paces them.
    """

    #: whether raw frames are in OpenCV's BGR order (captures) or already RGB (decoded images)
    raw_is_bgr = True

    def __init__(self, uri: str, options: SourceOptions | None = None) -> None:
        self.uri = uri
        self.options = replace(options) if options is not None else SourceOptions()
        self.stats = SourceStats()
        self._active = False
        self._stop = threading.Event()
        self._next_due = 0.0

    @property
    def live(self) -> bool:
        """True for cameras and network streams (frames arrive in real time)."""
        return bool(self.options.live)

    @property
    def fps(self) -> float | None:
        """The stream's nominal frame rate, when known."""
        return self.options.fps

    @property
    def camera(self) -> dict | None:
        """What a camera SDK source knows of its camera (report.json's `camera`); None for other sources."""
        return None

    def __enter__(self) -> VideoSource:
        if self._active:
            raise SpermEdgeError(f"source {self.uri} is already open")
        self._stop.clear()
        self._open_impl()
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the device or files (safe to call twice, and from another thread to end the stream)."""
        self._stop.set()
        if self._active:
            self._active = False
            self._close_impl()

    def stop(self) -> None:
        """Ask a running iteration to end after the current frame (thread-safe)."""
        self._stop.set()

    def __iter__(self) -> Iterator[Frame]:
        if not self._active:
            raise SpermEdgeError(f"source {self.uri} is not open: use it in a `with` block")
        while not self._stop.is_set():
            raw = self._read_impl()
            if raw is None:
                return
            image, name, meta = (*raw, None)[:3] if isinstance(raw, tuple) else (raw, "", None)
            try:
                rgb = self._convert(image)
            except SpermEdgeError as err:
                self.stats.skipped += 1
                log.warning("skipped a frame of %s: %s", self.uri, err)
                continue
            self._pace()
            frame = Frame(index=self.stats.delivered, image=rgb, timestamp=time.monotonic(), name=name, meta=meta)
            self.stats.delivered += 1
            yield frame

    def _convert(self, image: np.ndarray) -> np.ndarray:
        rgb = to_rgb8(image, source=self.uri, bgr=self.raw_is_bgr)
        w, h = self.options.width, self.options.height
        if w and h and not self.live and rgb.shape[:2] != (h, w):
            import cv2

            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        return rgb

    def _pace(self) -> None:
        """Replay files at `options.fps` when asked (live sources are paced by their device)."""
        if self.live or not self.options.fps:
            return
        now = time.monotonic()
        if self._next_due > now:
            self._stop.wait(self._next_due - now)
        self._next_due = max(now, self._next_due) + 1.0 / self.options.fps

    # -- hooks ---------------------------------------------------------------------------------
    def _open_impl(self) -> None:
        raise NotImplementedError

    def _close_impl(self) -> None:
        raise NotImplementedError

    def _read_impl(self) -> RawFrame | None:
        raise NotImplementedError
