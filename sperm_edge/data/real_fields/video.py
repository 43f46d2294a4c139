"""A panning clip (and a still field) composed from real labelled crops, with per-frame ground truth.

The slide is laid out by `slide.SlideBuilder` on the crops' own background colour (the median of
the sprites' glass colours), with the glass's faint texture; the stage pans over it along the
synthetic clips' serpentine path (`synthetic.video.pan_path`), and each frame gets the camera's
fixed illumination, slight defocus and fresh sensor noise. A *look* (`looks`) departs from that
plain field in one condition: darker tails, halos, uneven light, defocus, JPEG, another
magnification or a dense slide.

Ground truth (``clip.json``) has the synthetic clips' layout, so `runtime.scoring.score_events`
reads both; each frame's cell carries ``debris`` (SMIDS ``Non-Sperm`` objects: not sperm, not to
be counted as heads) and ``center`` (head centroid), and each slide cell its ``source`` crop (path
under DATA), so the class predicted on the field can be compared with the class predicted on the
original crop. See `sprites` for how the head box is derived from the stain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.data.real_fields.library import REAL_STYLES, RealStyle, draw_sprites, get_real_style
from sperm_edge.data.real_fields.looks import LOOKS, FieldLook, dress, get_look
from sperm_edge.data.real_fields.slide import SlideBuilder
from sperm_edge.data.synthetic._io import encode_png
from sperm_edge.data.synthetic._optics import Look, background_texture, finish, illumination
from sperm_edge.data.synthetic.video import pan_path
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_dir, atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


def camera_look(rng: np.random.Generator, background: np.ndarray, look: FieldLook = LOOKS["plain"]) -> Look:
    """The camera of one real-field clip: the look's defocus (plain: sigma 0.3-0.7 px), sensor noise (1-2.5 grey
    levels) and JPEG quality."""
    blur, noise = float(rng.uniform(*look.blur)), float(rng.uniform(1.0, 2.5))
    quality = int(rng.integers(look.jpeg[0], look.jpeg[1] + 1)) if look.jpeg else 95
    return Look(background, np.zeros(3), np.zeros(3), blur, noise, 0.0, 0.0, quality, 0.0)


class RealFieldVideo:
    """Frames and ground truth of a pan over a slide of real cells; `frame(i)` is deterministic for the arguments."""

    def __init__(
        self,
        data: str | Path,
        cells: int = 40,
        frames: int = 60,
        seed: int = 0,
        style: str = "hushem",
        size: tuple[int, int] = (960, 720),
        fps: float = 15.0,
        look: str = "plain",
    ) -> None:
        if cells < 1 or frames < 1 or fps <= 0 or min(size) < 128:
            raise SpermEdgeError(f"a real field needs cells >= 1, frames >= 1, fps > 0 and 128x128 px or more; "
                                 f"got {cells}, {frames}, {fps}, {size}")  # fmt: skip
        self.style: RealStyle = get_real_style(style)
        self.look: FieldLook = get_look(look)
        self.seed, self.size, self.fps, self.n_frames = seed, (int(size[0]), int(size[1])), float(fps), frames
        rng = np.random.default_rng([seed, 11])
        w, h = self.size
        self.offsets = pan_path(rng, frames, self.size, max(1.0, 0.02 * w), fps)
        sw, sh = (self.offsets.max(axis=0) + np.array([w, h])).tolist()
        self.slide_size = (int(sw), int(sh))
        sprites, debris = draw_sprites(rng, data, self.style, cells, int(round(self.style.debris * cells)))
        if self.look.name != "plain":  # the plain look draws nothing more: its clips stay as they were
            look_rng = np.random.default_rng([seed, 13])
            sprites = [dress(look_rng, s, self.look) for s in sprites]
            debris = [dress(look_rng, s, self.look) for s in debris]
        self.head_width = self.style.head_width * self.look.scale
        builder = SlideBuilder(self.slide_size, self.head_width, self.look.spacing, self.look.touch_distance)
        for sprite in sprites:
            builder.place(rng, sprite, touching=bool(rng.uniform() < self.look.touching))
        for sprite in debris:
            builder.place(rng, sprite)
        self.cells = builder.placed
        bg = np.median(np.array([s.background for s in sprites + debris]), axis=0).astype(np.float32)
        self.background = bg
        texture = background_texture(rng, sh, sw)
        log_light = np.log(bg)[None, None, :] + texture[..., None] - builder.density
        self.slide = cv2.exp(log_light.astype(np.float32))
        self._gain = cv2.merge([cv2.exp(illumination(rng, h, w) * np.float32(self.look.light))] * 3)
        self._look = camera_look(rng, bg, self.look)
        self._boxes = np.array([c.box for c in self.cells], dtype=int).reshape(-1, 4)
        log.debug("real %s slide %dx%d: %d cells, %d debris", self.style.name, sw, sh, len(sprites), len(debris))

    def __len__(self) -> int:
        return self.n_frames

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as RGB uint8 (h, w, 3)."""
        (x, y), (w, h) = self.offsets[index], self.size
        rng = np.random.default_rng([self.seed, 12, index])
        return finish(rng, self.slide[y : y + h, x : x + w], self._look, self._gain, jpeg=self.look.jpeg is not None)

    def truth(self, index: int) -> dict:
        """Ground truth of frame `index`: cells whose head box meets the frame, boxes clipped, `partial` if cut."""
        (ox, oy), (w, h) = self.offsets[index], self.size
        b = self._boxes - np.array([ox, oy, ox, oy])
        visible = (b[:, 2] > 0) & (b[:, 0] < w) & (b[:, 3] > 0) & (b[:, 1] < h)
        out = []
        for i in np.nonzero(visible)[0]:
            cell = self.cells[i]
            x0, y0, x1, y1 = (int(v) for v in b[i])
            partial = x0 < 0 or y0 < 0 or x1 > w or y1 > h
            out.append({
                "id": int(cell.id), "box": [max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)],
                "center": [round(cell.center[0] - ox, 1), round(cell.center[1] - oy, 1)],
                "class": cell.sprite.cls, "debris": cell.sprite.debris, "partial": partial,
            })  # fmt: skip
        return {"index": index, "offset": [int(ox), int(oy)], "cells": out}

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict]]:
        for i in range(self.n_frames):
            yield self.frame(i), self.truth(i)

    def ground_truth(self) -> dict:
        return {
            "kind": "real-field",
            "fps": self.fps,
            "size": list(self.size),
            "style": self.style.name,
            "look": self.look.name,
            "seed": self.seed,
            "classes": list(self.style.classes),
            "head_width": self.head_width,
            "background": [round(float(v), 1) for v in self.background],
            "slide_size": list(self.slide_size),
            "cells": {str(c.id): c.record() for c in self.cells},
            "frames": [self.truth(i) for i in range(self.n_frames)],
        }


def write_real_field(
    data: str | Path,
    out_dir: str | Path,
    cells: int = 40,
    frames: int = 60,
    seed: int = 0,
    style: str = "hushem",
    size: tuple[int, int] = (960, 720),
    fps: float = 15.0,
    look: str = "plain",
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write OUT_DIR/clip.mp4 + clip.json (the pan) and OUT_DIR/field.png + field.json (its first frame).

    The folder is built under a temporary name and renamed into place when complete.
    """
    video = RealFieldVideo(data, cells, frames, seed, style, size, fps, look)
    with atomic_dir(out_dir, force) as tmp:
        writer = cv2.VideoWriter(str(tmp / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), video.fps, video.size)
        try:
            if not writer.isOpened():
                raise SpermEdgeError(f"OpenCV cannot write an mp4v video in {tmp}")
            for i in range(frames):
                image = video.frame(i)
                if i == 0:
                    atomic_write_bytes(tmp / "field.png", encode_png(image))
                writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                if progress is not None:
                    progress(i + 1, frames)
        finally:
            writer.release()
        truth = video.ground_truth()
        atomic_write_json(tmp / "clip.json", truth)
        first = truth["frames"][0]
        atomic_write_json(tmp / "field.json", {k: v for k, v in truth.items() if k != "frames"} | first)
    return Path(out_dir)


__all__ = ["REAL_STYLES", "RealFieldVideo", "write_real_field"]
