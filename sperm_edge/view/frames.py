"""The hand-off of frames from the stream to the web side: one slot, the newest frame wins.

The output thread only stores a reference (`FrameSlot.put`: no copy, no drawing, no encoding),
so serving never slows the stream. Drawing and JPEG encoding happen on the web side, only while
a client watches, at most once per new frame whatever the number of clients (`JpegFrames`
caches the newest encoding), and each client is paced to the view's frame rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from sperm_edge.runtime.annotate import draw


@dataclass(frozen=True)
class SlotFrame:
    """One frame as the stream left it: the image, its cells (`CellResult`s) and the stream's FPS."""

    version: int
    image: np.ndarray
    cells: Sequence
    fps: float


class FrameSlot:
    """A one-slot buffer: `put` replaces whatever waits; readers wait for a version newer than theirs."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: SlotFrame | None = None
        self._closed = False
        self.puts = 0

    def put(self, image: np.ndarray, cells: Sequence, fps: float) -> None:
        with self._cond:
            self.puts += 1
            self._frame = SlotFrame(self.puts, image, list(cells), fps)
            self._cond.notify_all()

    def close(self) -> None:
        """No more frames: wake the readers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def newer_than(self, version: int, timeout: float) -> SlotFrame | None:
        """The newest frame if its version is above `version`, waiting up to `timeout` s; else None."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or (self._frame is not None and self._frame.version > version),
                                timeout)  # fmt: skip
            frame = self._frame
        return frame if frame is not None and frame.version > version else None


class JpegFrames:
    """Annotated JPEGs of the slot's frames, encoded once per frame however many clients read them."""

    def __init__(self, slot: FrameSlot, min_interval: float = 0.1, quality: int = 80, max_side: int = 1280) -> None:
        self.slot = slot
        self.min_interval = min_interval
        self.quality = quality
        self.max_side = max_side
        self.encoded = 0
        self.clients = 0  # streams open now (kept by the web app, on its event loop)
        self._lock = threading.Lock()
        self._cache: tuple[int, bytes] | None = None
        self._encoded_at = 0.0

    def next_after(self, version: int, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """(version, JPEG bytes) of the newest frame above `version`, or None after `timeout` s.

        Within `min_interval` of the last encoding, a client behind the cache gets the cached frame:
        however many clients watch, at most 1 / min_interval encodings a second.
        """
        frame = self.slot.newer_than(version, timeout)
        if frame is None:
            return None
        with self._lock:  # one encoder at a time; the other clients take the cached bytes
            cache = self._cache
            fresh = cache is not None and time.monotonic() - self._encoded_at < self.min_interval
            if cache is None or (cache[0] < frame.version and not (fresh and cache[0] > version)):
                self._cache = (frame.version, self._encode(frame))
                self._encoded_at = time.monotonic()
                self.encoded += 1
            return self._cache

    def _encode(self, frame: SlotFrame) -> bytes:
        image = draw(frame.image, frame.cells, frame.fps)
        scale = self.max_side / max(image.shape[:2])
        if scale < 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
            raise RuntimeError("JPEG encoding failed")
        return data.tobytes()
