"""Which cells a person should look at, and keeping them: a bounded ring buffer plus atomic files on disk.

A cell is flagged when its class is one of the bundle's abnormal classes, when its top probability
is under `min_confidence`, or when its prediction was unstable across the frames it was seen in
(the share of frames agreeing with its class is under `min_stability`). Each flagged cell is kept
in memory (the newest `capacity` of them, for displays) and written to `OUT/flagged/`:
`ID.png` (the crop, lossless, so `sperm-edge explain --event ID` sees exactly what the network
saw; the event's `crop`), `ID.frame.jpg` (the frame it came from; `frame_image`) and `ID.json`
(the event).
"""

from __future__ import annotations

import collections
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.io import atomic_write_bytes, atomic_write_json

FLAGGED_DIR = "flagged"


@dataclass(frozen=True)
class FlagPolicy:
    """The three reasons to flag a cell."""

    abnormal: frozenset[str]
    min_confidence: float = 0.6
    min_stability: float = 0.7

    @classmethod
    def for_classes(
        cls, abnormal: Iterable[str], min_confidence: float = 0.6, min_stability: float = 0.7
    ) -> FlagPolicy:
        return cls(frozenset(abnormal), min_confidence, min_stability)

    def reasons(self, label: str, confidence: float, stability: float = 1.0) -> list[str]:
        """Why a cell is flagged (empty: not flagged)."""
        out = []
        if label in self.abnormal:
            out.append("abnormal")
        if confidence < self.min_confidence:
            out.append("low_confidence")
        if stability < self.min_stability:
            out.append("unstable")
        return out


def event_name(event_id: int) -> str:
    """File stem of an event's files: zero-padded so they sort in order."""
    return f"{int(event_id):06d}"


def _encode(rgb: np.ndarray, ext: str, quality: int = 90) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError(f"cannot encode {ext}")
    return data.tobytes()


class FlagStore:
    """The newest `capacity` flagged cells in memory, every one of them on disk under `out_dir/flagged/`.

    Long runs stay bounded on disk: the full frame of a flagged cell (a JPEG of the whole field) is saved
    for the first `max_frames` flagged cells only (crops are always kept), and no image at all is saved
    while the output folder's file system has less than `min_free_mb` free; `frames_skipped` and
    `images_skipped_low_disk` count what was left out, for the report.
    """

    def __init__(
        self, out_dir: str | Path | None, capacity: int = 128, save_frames: bool = True, max_frames: int = 1000,
        min_free_mb: float = 200.0,
    ) -> None:  # fmt: skip
        self.dir = Path(out_dir) / FLAGGED_DIR if out_dir is not None else None
        self.save_frames = save_frames
        self.max_frames, self.min_free_mb = max_frames, min_free_mb
        self.frames_saved = self.frames_skipped = self.images_skipped_low_disk = 0
        self._made = False
        self.recent: collections.deque[dict] = collections.deque(maxlen=capacity)
        self.count = 0
        self._lock = threading.Lock()

    def _disk_low(self) -> bool:
        if not self._made:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._made = True
        return shutil.disk_usage(self.dir).free < self.min_free_mb * 1e6

    def add(self, event: dict, crop: np.ndarray, frame: np.ndarray | None = None) -> dict:
        """Keep a flagged cell; returns the paths written (relative to the output folder)."""
        name = event_name(event["id"])
        paths = {}
        if self.dir is not None and self._disk_low():
            self.images_skipped_low_disk += 1
        elif self.dir is not None:
            atomic_write_bytes(self.dir / f"{name}.png", _encode(crop, ".png"))
            paths["crop"] = f"{FLAGGED_DIR}/{name}.png"
            if frame is not None and self.save_frames and self.frames_saved < self.max_frames:
                atomic_write_bytes(self.dir / f"{name}.frame.jpg", _encode(frame, ".jpg"))
                paths["frame_image"] = f"{FLAGGED_DIR}/{name}.frame.jpg"
                self.frames_saved += 1
            elif frame is not None and self.save_frames:
                self.frames_skipped += 1
            atomic_write_json(self.dir / f"{name}.json", {**event, **paths})
        with self._lock:
            self.recent.append({"event": event, "crop": crop, **paths})
            self.count += 1
        return paths
