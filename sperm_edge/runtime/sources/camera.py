"""What the SDK cameras (`pylon://`, `mmcore://`) share: their URI options, pixel conversion, and their record.

A camera SDK source is a `Capture` (the part of `cv2.VideoCapture` a `CaptureSource` uses), so it gets
the same grabber thread, newest-frame-only policy, stall watchdog and reconnect policy as every other
live source. Its `read()` returns the frame with the camera's own frame id and timestamp, and it keeps
a `CameraRecord` across reopens: the camera's model and serial, the settings read back from the device
after they were applied (not the ones asked for), grab timeouts and failed buffers (counted, not fatal),
and the frames the camera dropped, from gaps in its frame ids.

Options go in the URI's query, e.g. `pylon://21234567?exposure_us=2000&gain_db=3&pixel_format=Mono8&fps=30&roi=0,0,1280,960`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qsl

import cv2
import numpy as np

from sperm_edge.errors import SpermEdgeError

OPTIONS = ("exposure_us", "gain_db", "pixel_format", "fps", "roi")
READ_TIMEOUT_MS = 500  # one wait for a buffer; timeouts are counted and waited through up to the stall timeout

# OpenCV's demosaicing code for each GenICam Bayer pattern (named by its first row's first two pixels);
# OpenCV names its codes by the second row, so GenICam's BayerRG is OpenCV's BayerBG, and so on
BAYER_TO_BGR = {"RG": cv2.COLOR_BayerBG2BGR, "BG": cv2.COLOR_BayerRG2BGR, "GR": cv2.COLOR_BayerGB2BGR,
                "GB": cv2.COLOR_BayerGR2BGR}  # fmt: skip


@dataclass(frozen=True)
class CameraOptions:
    """Settings asked for in the URI's query; None leaves the device's own."""

    exposure_us: float | None = None
    gain_db: float | None = None
    pixel_format: str | None = None
    fps: float | None = None
    roi: tuple[int, int, int, int] | None = None  # x, y, width, height

    @classmethod
    def parse(cls, query: str, uri: str) -> CameraOptions:
        values = {}
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            if key not in OPTIONS:
                raise SpermEdgeError(f"unknown camera option {key!r} in {uri} (options: {', '.join(OPTIONS)})")
            try:
                if key == "roi":
                    roi = tuple(int(v) for v in value.split(","))
                    if len(roi) != 4 or min(roi[2:]) <= 0 or min(roi[:2]) < 0:
                        raise ValueError
                    values[key] = roi
                elif key == "pixel_format":
                    values[key] = value
                else:
                    values[key] = float(value)
                    if values[key] <= 0 and key != "gain_db":
                        raise ValueError
            except ValueError:
                expected = "x,y,width,height" if key == "roi" else "a positive number"
                raise SpermEdgeError(f"camera option {key}={value!r} in {uri} is not {expected}") from None
        return cls(**values)


@dataclass
class CameraRecord:
    """What a camera source knows of its camera; kept across reopens (report.json's `camera`)."""

    sdk: str
    model: str | None = None
    serial: str | None = None
    settings: dict = field(default_factory=dict)  # read back from the device
    frames: int = 0
    grab_timeouts: int = 0
    failed_buffers: int = 0
    dropped_by_camera: int = 0  # gaps in the camera's frame ids
    opened: int = 0
    _last_id: int | None = None

    def opened_again(self) -> None:
        """A (re)opened camera numbers its frames afresh."""
        self.opened += 1
        self._last_id = None

    def frame(self, frame_id: int | None) -> None:
        """One frame delivered by the SDK, with the camera's id for it."""
        self.frames += 1
        if frame_id is not None:
            if self._last_id is not None and frame_id > self._last_id + 1:
                self.dropped_by_camera += frame_id - self._last_id - 1
            self._last_id = frame_id

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def scale_to_8bit(image: np.ndarray, bits: int | None) -> np.ndarray:
    """An image of `bits` significant bits per sample (10, 12, 16 in 16-bit words) as uint8."""
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise SpermEdgeError(f"unsupported camera sample type {image.dtype}")
    shift = max(0, (bits or 16) - 8)
    return np.clip(image >> shift, 0, 255).astype(np.uint8)


def to_bgr(image: np.ndarray, pixel_format: str, bits: int | None = None) -> np.ndarray:
    """A camera frame (Mono, Bayer, RGB/BGR, with alpha or not, 8 to 16 bits) as BGR uint8 for the pipeline."""
    name = pixel_format.upper()
    image = scale_to_8bit(image, bits)
    if name.startswith("BAYER"):
        pattern = name[5:7]
        if pattern not in BAYER_TO_BGR or image.ndim != 2:
            raise SpermEdgeError(f"unsupported Bayer format {pixel_format}")
        return cv2.cvtColor(image, BAYER_TO_BGR[pattern])
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if name.startswith("RGB") else cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if name.startswith("RGB") else image
    raise SpermEdgeError(f"unsupported camera frame of shape {image.shape} ({pixel_format})")


class CameraCapture:
    """Base of the SDK captures: the `Capture` protocol over `_grab()`, which subclasses implement.

    `read()` waits through grab timeouts and failed buffers (counting them) for up to `give_up` seconds,
    then reports no frame, so the source's reconnect policy takes over.
    """

    def __init__(self, record: CameraRecord, give_up: float, fps: float | None) -> None:
        self.record, self.give_up, self._fps = record, give_up, fps
        self._open = True
        record.opened_again()

    def read(self) -> tuple[bool, tuple | None]:
        deadline = time.monotonic() + self.give_up
        while self._open and time.monotonic() < deadline:
            grabbed = self._grab()
            if grabbed is None:
                continue
            image, meta = grabbed
            self.record.frame(meta.get("camera_frame_id"))
            return True, (image, "", meta)
        return False, None

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self._open

    def get(self, prop: int) -> float:
        return float(self._fps or 0.0) if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop: int, value: float) -> bool:
        return False

    def release(self) -> None:
        if self._open:
            self._open = False
            self._close()

    def _grab(self) -> tuple[np.ndarray, dict] | None:
        """One BGR frame and its camera metadata, or None after a timeout or failed buffer (counted)."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError
