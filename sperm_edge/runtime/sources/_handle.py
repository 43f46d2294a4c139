"""One opened capture that is never released while a thread is inside its `read()`.

OpenCV's `VideoCapture.read()` can block (a stalled network stream, a wedged camera driver), and
releasing a capture from another thread while a read is in progress is undefined behaviour in
OpenCV. So reads and the release happen under one lock: `retire()` releases at once when no read is
running, and otherwise leaves the release to the reader, which does it as soon as `read()` returns.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import numpy as np

from sperm_edge.runtime.sources.base import RawFrame

log = logging.getLogger(__name__)


class Capture(Protocol):
    """The part of `cv2.VideoCapture` a source uses."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...
    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...


class CaptureHandle:
    """A capture, its read lock, and when the read in progress (if any) started."""

    def __init__(self, cap: Capture) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._retired = False
        self._released = False
        self._reading_since: float | None = None

    def read(self) -> RawFrame | None:
        """The next frame, or None (end, error, or retired)."""
        with self._lock:
            if self._retired:
                self._release_locked()
                return None
            self._reading_since = time.monotonic()
            try:
                ok, image = self.cap.read()
            finally:
                self._reading_since = None
            if self._retired:  # retired while we were inside read(): the release is ours to do
                self._release_locked()
                return None
        return image if ok and image is not None else None

    def stalled_for(self) -> float:
        """Seconds the read in progress has been running (0 when no read is in progress)."""
        since = self._reading_since
        return time.monotonic() - since if since is not None else 0.0

    def retire(self, wait: float = 0.0) -> bool:
        """No more reads. Release now if no read is in progress (waiting up to `wait` s for one to end);
        else the reader releases when its read returns. True when released here."""
        self._retired = True
        got = self._lock.acquire(timeout=wait) if wait > 0 else self._lock.acquire(blocking=False)
        if not got:
            return False
        try:
            self._release_locked()
        finally:
            self._lock.release()
        return True

    def _release_locked(self) -> None:
        if not self._released:
            self._released = True
            try:
                self.cap.release()
            except Exception as err:  # a release failing must not take the stream down with it
                log.warning("releasing a capture failed: %s", err)
