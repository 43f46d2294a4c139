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
from collections import deque
from collections.abc import Callable

import cv2

from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.sources._handle import Capture, CaptureHandle
from sperm_edge.runtime.sources.base import Gap, RawFrame, SourceOptions, VideoSource
from sperm_edge.runtime.sources.uri import SourceURI, csi_pipeline

log = logging.getLogger(__name__)


Opener = Callable[[SourceURI, SourceOptions], Capture]


#: schemes whose OpenCV backend (FFmpeg, GStreamer) takes open and read timeouts
NATIVE_TIMEOUTS = frozenset({"rtsp", "rtmp", "http", "gst", "csi"})
#: frames a live every-frame source queues before its grabber waits for the consumer
EVERY_FRAME_QUEUE = 8
#: how long close() waits for a grabber (and a read in progress) before leaving it to finish alone
CLOSE_WAIT_S = 1.0
_WATCH_S = 0.25


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
        pipeline = csi_pipeline(uri.index, options.width, options.height, options.fps)
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER, _timeouts(options))
    elif uri.scheme == "gst":
        cap = cv2.VideoCapture(uri.location, cv2.CAP_GSTREAMER, _timeouts(options))
    elif uri.scheme in ("rtsp", "rtmp", "http"):
        cap = cv2.VideoCapture(uri.location, cv2.CAP_FFMPEG, _timeouts(options))
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


def _timeouts(options: SourceOptions) -> list[int]:
    """OpenCV open parameters: give up opening after twice the stall timeout, a read after the stall timeout."""
    stall_ms = max(1, int(options.stall_timeout * 1000))
    return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2 * stall_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, stall_ms]


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
        super().__init__(uri.raw, options)
        if self.options.live is None:
            self.options.live = uri.live
        if self.options.latest_only is None:
            self.options.latest_only = bool(self.options.live)
        self.parsed = uri
        self._opener = opener
        # a custom opener may not set OpenCV's timeouts: the watchdog then acts at the stall timeout itself
        native = opener is open_capture and uri.scheme in NATIVE_TIMEOUTS
        stall = self.options.stall_timeout
        self._stall_limit = 2 * stall if native else stall
        self._handle: CaptureHandle | None = None
        self._pos = 0  # frames read from the capture (a file's position)
        self._count = 0  # a file's frame count (0: unknown)
        self._native_fps: float | None = None
        # grabber state, shared with the grabber thread under `_cond`
        self._cond = threading.Condition()
        self._buffer: deque[RawFrame] = deque()
        self._ended = False
        self._generation = 0  # bumped to retire a grabber (watchdog, close)
        self._last_frame = 0.0
        self._grabber: threading.Thread | None = None

    @property
    def fps(self) -> float | None:
        return self.options.fps or self._native_fps

    @property
    def camera(self) -> dict | None:
        record = getattr(self._opener, "record", None)  # a camera SDK's opener keeps one across reopens
        return record.to_dict() if record is not None else None

    @property
    def threaded(self) -> bool:
        """Read by a grabber thread (live sources, and files asked for the newest frame only)."""
        return bool(self.live or self.options.latest_only)

    # -- open / close ----------------------------------------------------------------------------
    def _open_impl(self) -> None:
        handle = CaptureHandle(self._opener(self.parsed, self.options))
        fps = handle.cap.get(cv2.CAP_PROP_FPS)
        self._native_fps = fps if fps and 0 < fps < 1000 else None
        if not self.live:
            self._count = max(0, int(handle.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self._pos = 0
        self._ended = False
        self._buffer.clear()
        self._last_frame = time.monotonic()
        self._handle = handle
        if self.threaded:
            with self._cond:
                self._start_grabber(handle, "")

    def _close_impl(self) -> None:
        with self._cond:
            self._generation += 1  # any grabber still running is stale from now on
            handle, self._handle = self._handle, None
            grabber, self._grabber = self._grabber, None
            self._cond.notify_all()
        stuck = False
        if grabber is not None:
            grabber.join(timeout=CLOSE_WAIT_S)
            stuck = grabber.is_alive()
        if handle is not None and not handle.retire(wait=0.0 if stuck else CLOSE_WAIT_S):
            log.warning("%s: a read is still blocked; its capture is released when the read returns", self.uri)

    # -- reading ---------------------------------------------------------------------------------
    def _read_impl(self) -> RawFrame | None:
        if self.threaded:
            return self._take()
        return self._read_next()

    def _read_next(self) -> RawFrame | None:
        """Synchronous read of a file: every frame, in order."""
        image = self._read_once()
        if image is not None:
            return image
        if self._count and self._pos < self._count - 1 and not self._stop.is_set():
            # failed before the end of the file: reopen once, seek back, and carry on
            if self._reconnect(f"read failed at frame {self._pos} of {self._count}", seek=self._pos, attempts=1):
                image = self._read_once()
                if image is not None:
                    return image
        if self.options.loop and self._pos > 0 and self._reconnect("end of file (looping)", seek=0, gap=False):
            return self._read_once()
        return None

    def _read_once(self) -> RawFrame | None:
        handle = self._handle
        image = handle.read() if handle is not None else None
        if image is not None:
            self._pos += 1
        return image

    def _reconnect(self, reason: str, seek: int | None = None, attempts: int | None = None, gap: bool = True) -> bool:
        """Release the current capture and reopen it with back-off; True when a capture is open again."""
        if self._handle is not None:
            self._handle.retire(wait=CLOSE_WAIT_S)
            self._handle = None
        return self._reopen(reason, seek, attempts, gap) is not None

    def _reopen(
        self, reason: str, seek: int | None = None, attempts: int | None = None, gap: bool = True,
        generation: int | None = None,
    ) -> CaptureHandle | None:  # fmt: skip
        """Open a new capture with back-off and make it current (unless `generation` was retired meanwhile)."""
        attempts = self.options.reopen_attempts if attempts is None else attempts
        started = self._last_frame if gap and self.threaded else time.monotonic()
        delay = self.options.backoff
        tries = 0
        log.log(logging.WARNING if gap else logging.DEBUG, "%s: %s; reopening", self.uri, reason)
        while not self._stop.is_set() and (attempts < 0 or tries < attempts) and self._current(generation):
            tries += 1
            if gap and self._stop.wait(delay):
                break
            delay = min(delay * 2, self.options.max_backoff)
            try:
                handle = CaptureHandle(self._opener(self.parsed, self.options))
            except SpermEdgeError as err:
                log.warning("%s: reopen %d failed: %s", self.uri, tries, err)
                continue
            if seek is not None:
                handle.cap.set(cv2.CAP_PROP_POS_FRAMES, seek)
                self._pos = seek
            with self._cond:
                if not self._current(generation):
                    handle.retire()
                    return None
                self._handle = handle
                if gap:
                    self.stats.reopens += 1
                    self.stats.gaps.append(Gap(self.stats.delivered, time.monotonic() - started, reason))
            if gap:
                log.info("%s: reopened after %.2f s", self.uri, time.monotonic() - started)
            return handle
        if gap and not self._stop.is_set() and self._current(generation):
            self.stats.error = f"{reason}; gave up after {tries} reopen attempts"
            log.error("%s: %s", self.uri, self.stats.error)
        return None

    def _current(self, generation: int | None) -> bool:
        return generation is None or generation == self._generation

    # -- grabber ---------------------------------------------------------------------------------
    def _start_grabber(self, handle: CaptureHandle | None, reason: str) -> None:
        """A new grabber generation reading `handle` (None: it opens its own first). Call holding `_cond`."""
        self._generation += 1
        self._grabber = threading.Thread(
            target=self._grab_loop, args=(self._generation, handle, reason), name=f"grab {self.uri}", daemon=True
        )
        self._grabber.start()

    def _grab_loop(self, generation: int, handle: CaptureHandle | None, reason: str) -> None:
        """Grabber thread: read frames into the buffer, reopening the source when it drops."""
        while not self._stop.is_set() and self._current(generation):
            if handle is None:
                handle = self._reopen(reason, generation=generation)
                if handle is None:
                    break
            image = handle.read()
            if not self._current(generation):
                return  # superseded (watchdog or close) while inside read(): the new owner carries on
            if image is None:
                handle.retire()
                handle, reason = None, "no frame"
                if not self.live:  # a file asked for the newest frame only: its end is the end, unless looping
                    if not self.options.loop:
                        break
                    handle = self._reopen("end of file (looping)", seek=0, gap=False, generation=generation)
                    if handle is None:
                        break
                continue
            self._pos += 1
            self._offer(image)
        with self._cond:
            if self._current(generation):
                self._ended = True
            self._cond.notify_all()

    def _offer(self, image: RawFrame) -> None:
        with self._cond:
            if self.options.latest_only:
                if self._buffer:
                    self.stats.dropped += 1
                    self._buffer.clear()
            else:
                while len(self._buffer) >= EVERY_FRAME_QUEUE and not self._stop.is_set():
                    self._cond.wait(_WATCH_S)
            self._buffer.append(image)
            self._last_frame = time.monotonic()
            self._cond.notify_all()

    def _take(self) -> RawFrame | None:
        """The next buffered frame (waiting for one, and watching for a stalled read meanwhile); None at the end."""
        with self._cond:
            while not self._buffer and not self._ended and not self._stop.is_set():
                self._cond.wait(_WATCH_S)
                self._watch()
            if not self._buffer:
                return None
            image = self._buffer.popleft()
            self._cond.notify_all()
            return image

    def _watch(self) -> None:
        """Watchdog (holding `_cond`): a read stuck past the stall limit is left behind and the source reopened."""
        handle = self._handle
        stalled = handle.stalled_for() if handle is not None else 0.0
        if stalled < self._stall_limit:
            return
        reason = f"stalled: no frame for {stalled:.1f} s"
        log.warning("%s: %s (a read did not return); reopening", self.uri, reason)
        self._handle = None
        handle.retire()  # released by the stuck reader when its read returns
        self._start_grabber(None, reason)
