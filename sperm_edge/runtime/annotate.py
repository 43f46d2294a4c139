"""What a person sees: frames with boxes, labels, confidence and FPS, to a video file or a window."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)

GREEN, RED, AMBER = (40, 200, 60), (230, 40, 40), (240, 170, 0)  # RGB


def draw(rgb: np.ndarray, cells: Sequence, fps: float | None = None) -> np.ndarray:
    """A copy of the frame with each cell's box and `class confidence #track`; normal green, flagged red.

    `cells` are `CellResult`s (box, label, confidence, track, flagged).
    """
    out = rgb.copy()
    scale = max(0.4, min(out.shape[:2]) / 1200)
    for cell in cells:
        x0, y0, x1, y1 = (int(v) for v in cell.box)
        colour = RED if cell.flagged else (AMBER if cell.confidence < 0.6 else GREEN)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, max(1, round(2 * scale)))
        text = f"{cell.label} {cell.confidence:.2f}" + (f" #{cell.track}" if cell.track else "")
        cv2.putText(
            out,
            text,
            (x0, max(12, y0 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * scale,
            colour,
            max(1, round(scale)),
            cv2.LINE_AA,
        )
    if fps is not None:
        origin, size = (8, int(28 * scale) + 4), 0.8 * scale
        for colour, thickness in (((255, 255, 255), max(2, round(3 * scale))), ((0, 0, 0), max(1, round(scale)))):
            # white halo under black text: readable on light and dark smears alike
            cv2.putText(out, f"{fps:5.1f} FPS", origin, cv2.FONT_HERSHEY_SIMPLEX, size, colour, thickness, cv2.LINE_AA)
    return out


class VideoFileOutput:
    """An annotated mp4, written under a temporary name and renamed into place when closed."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._writer = None
        self.frames = 0

    def __enter__(self) -> VideoFileOutput:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(keep=exc_type is None or exc_type is KeyboardInterrupt)

    def write(self, rgb: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise SpermEdgeError(f"OpenCV cannot write video {self.path}")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if keep:
                os.replace(self._tmp, self.path)
        self._tmp.unlink(missing_ok=True)


def gui_available() -> bool:
    """Whether OpenCV can open a window here (a GUI build and, on Linux, a display)."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("sperm-edge probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("sperm-edge probe")
    except cv2.error:
        return False
    return True


class Window:
    """A live window; `show` returns False once the user presses q or Esc."""

    def __init__(self, title: str = "sperm-edge") -> None:
        self.title = title

    def __enter__(self) -> Window:
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass

    def show(self, rgb: np.ndarray) -> bool:
        cv2.imshow(self.title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
