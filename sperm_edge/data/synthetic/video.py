"""A clip that pans across a synthetic slide, as when a technician moves the stage, with ground truth.

The slide (larger than a frame) is rendered once; the stage follows a serpentine path (right,
down, left, down, ..., and back up after four sweeps) with eased starts and stops and pauses;
each frame is the window at the stage offset, photographed with the camera's own illumination,
slowly drifting focus and fresh sensor noise. Every cell has a stable id, so a runtime can be
checked for counting each cell once.

Ground truth (``FILE.json`` beside ``FILE.mp4``)::

    {"fps": 15.0, "size": [w, h], "style": "hushem", "seed": 0, "classes": [...],
     "slide_size": [W, H],
     "cells": {"<id>": {"class": ..., "shape": ..., "box": [x0, y0, x1, y1] on the slide}},
     "frames": [{"index": i, "offset": [x, y],   # frame's top-left on the slide
                 "cells": [{"id": 7, "box": [x0, y0, x1, y1], "class": ..., "partial": false}]}]}

Frame boxes are slide boxes minus the offset. A cell is listed in a frame when its head box meets
the frame; ``partial`` is true when the head is cut by the frame edge, and then its box is clipped
to the frame. Ids are integers (JSON object keys are their decimal strings).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.data.synthetic._io import check_output_file
from sperm_edge.data.synthetic._optics import Canvas, background_texture, compose, finish, illumination, sample_look
from sperm_edge.data.synthetic._style import Style, get_style
from sperm_edge.data.synthetic.fields import cell_record, draw_clutter, place_cells
from sperm_edge.data.synthetic.render import draw_cell
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_json

log = logging.getLogger(__name__)


def _smoothstep(n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n + 1)[1:]
    return t * t * (3 - 2 * t)


def pan_path(
    rng: np.random.Generator, frames: int, size: tuple[int, int], speed: float, fps: float, rows: int = 4
) -> np.ndarray:
    """Integer stage offsets (frames, 2) of a serpentine pan starting at (0, 0); ``speed`` in px/frame.

    The stage sweeps across, steps down, sweeps back, ...; after ``rows`` sweeps it climbs back up,
    so long clips revisit cells already seen (a runtime must not count them twice) and the slide
    stays bounded in size.
    """
    w, h = size
    leg_x, leg_y = int(w * rng.uniform(1.0, 1.6)), int(h * rng.uniform(0.5, 0.7))
    pos = [np.zeros(2)]
    x_dir, y_dir, row, legs = 1, 1, 0, 0
    while len(pos) < frames:
        pos.extend([pos[-1]] * int(rng.integers(0, max(1, int(fps)) + 1)))  # a pause to look
        if legs % 2 == 0:
            step = np.array([x_dir * leg_x, 0.0])
            x_dir = -x_dir
        else:
            if not 0 <= row + y_dir < rows:
                y_dir = -y_dir
            row += y_dir
            step = np.array([0.0, y_dir * leg_y])
        n = max(2, int(np.linalg.norm(step) / speed * 1.5))  # eased: peak speed 1.5x the mean
        start = pos[-1]
        pos.extend(start + step * t for t in _smoothstep(n))
        legs += 1
    path = np.round(np.array(pos[:frames])).astype(int)
    return path - path.min(axis=0)


class SyntheticVideo:
    """Frames and ground truth of a pan across a synthetic slide, rendered on demand.

    ``frame(i)`` depends only on the constructor arguments and ``i``. ``speed`` is the mean
    stage speed while moving, in px per frame (default: 2% of the frame width).
    """

    def __init__(
        self,
        frames: int,
        seed: int = 0,
        style: str | Style = "hushem",
        size: tuple[int, int] = (1280, 960),
        fps: float = 15.0,
        speed: float | None = None,
        cells_per_frame: float | None = None,
    ) -> None:
        if frames < 1 or fps <= 0 or size[0] < 64 or size[1] < 64:
            raise SpermEdgeError(f"a video needs frames >= 1, fps > 0 and at least 64x64, got {frames}, {fps}, {size}")
        self.style = get_style(style)
        self.seed, self.size, self.fps, self.n_frames = seed, (int(size[0]), int(size[1])), float(fps), frames
        rng = np.random.default_rng([seed, 0])
        w, h = self.size
        self.offsets = pan_path(rng, frames, self.size, speed or max(1.0, 0.02 * w), fps)
        sw, sh = (self.offsets.max(axis=0) + np.array([w, h])).tolist()
        self.slide_size = (int(sw), int(sh))
        self.look = sample_look(rng, self.style)
        scale = self.style.field_scale * min(w / 1280, h / 960) ** 0.5
        density = cells_per_frame if cells_per_frame is not None else rng.uniform(10, 20)
        n = int(round(density * sw * sh / (w * h)))
        classes = [str(c) for c in rng.choice(list(self.style.classes), size=n)]
        cells = place_cells(rng, self.style, self.slide_size, classes, scale)
        canvas = Canvas(sh, sw)
        draw_clutter(canvas, rng, scale)
        for spec in cells:
            draw_cell(canvas, rng, spec)
        self.slide = np.clip(compose(canvas, self.look, background_texture(rng, sh, sw)), 0, 255).astype(np.uint8)
        self.cells = [cell_record(s, i) for i, s in enumerate(cells)]
        self._boxes = np.array([c["box"] for c in self.cells], dtype=int).reshape(-1, 4)
        self._gain = cv2.merge([cv2.exp(illumination(rng, h, w))] * 3)
        self._focus = (rng.uniform(20, 60), rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.4))
        log.debug("slide %dx%d with %d cells", sw, sh, len(self.cells))

    def __len__(self) -> int:
        return self.n_frames

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB uint8 (h, w, 3)."""
        (x, y), (w, h) = self.offsets[index], self.size
        period, phase, amp = self._focus
        blur = max(0.3, self.look.blur + amp * np.sin(2 * np.pi * index / period + phase))
        window = self.slide[y : y + h, x : x + w].astype(np.float32)
        rng = np.random.default_rng([self.seed, 1, index])
        return finish(rng, window, self.look, self._gain, jpeg=False, blur=blur)

    def truth(self, index: int) -> dict:
        """Ground truth of frame ``index`` (see the module docstring)."""
        (ox, oy), (w, h) = self.offsets[index], self.size
        b = self._boxes - np.array([ox, oy, ox, oy])
        visible = (b[:, 2] > 0) & (b[:, 0] < w) & (b[:, 3] > 0) & (b[:, 1] < h)
        cells = []
        for i in np.nonzero(visible)[0]:
            x0, y0, x1, y1 = (int(v) for v in b[i])
            partial = x0 < 0 or y0 < 0 or x1 > w or y1 > h
            box = [max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)]
            cells.append({"id": int(i), "box": box, "class": self.cells[i]["class"], "partial": partial})
        return {"index": index, "offset": [int(ox), int(oy)], "cells": cells}

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict]]:
        for i in range(self.n_frames):
            yield self.frame(i), self.truth(i)

    def ground_truth(self) -> dict:
        """The whole clip's ground truth, JSON-able (see the module docstring)."""
        return {
            "fps": self.fps,
            "size": list(self.size),
            "style": self.style.name,
            "seed": self.seed,
            "classes": list(self.style.classes),
            "slide_size": list(self.slide_size),
            "cells": {str(c["id"]): {k: c[k] for k in ("class", "shape", "box")} for c in self.cells},
            "frames": [self.truth(i) for i in range(self.n_frames)],
        }


def write_video(
    out_path: str | Path,
    frames: int = 150,
    seed: int = 0,
    style: str | Style = "hushem",
    size: tuple[int, int] = (1280, 960),
    fps: float = 15.0,
    *,
    speed: float | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a panning clip as ``out_path`` (.mp4, mp4v) and its ground truth as the same name with .json.

    The video is written as ``<name>.tmp.mp4`` and renamed into place when complete.
    """
    out = Path(out_path)
    gt_path = check_output_file(out, ".mp4", "video", force)
    video = SyntheticVideo(frames, seed, style, size, fps, speed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), video.fps, video.size)
    try:
        if not writer.isOpened():
            raise SpermEdgeError(f"OpenCV cannot write an mp4v video at {tmp}")
        for i in range(frames):
            writer.write(cv2.cvtColor(video.frame(i), cv2.COLOR_RGB2BGR))
            if progress is not None:
                progress(i + 1, frames)
        writer.release()
        os.replace(tmp, out)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)
    atomic_write_json(gt_path, video.ground_truth())
    log.debug("wrote %d frames (%dx%d, %d cells) to %s", frames, *video.size, len(video.cells), out)
    return out
