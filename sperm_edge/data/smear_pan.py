"""A camera pan over real smear fields (`sperm-edge data real-pan`): the tracker meets real cells, tails and specks.

A window of the camera's size (960x768 by default) slides across each field along a diagonal and back, then
the next field comes (a jump, as when the stage moves to a new area). `clip.json` has the layout of the composed
clips' truth (`data.real_fields`, scored by `runtime.scoring.score_events`): every head's box per frame, clipped
to the window and `partial` where the window cuts it, ids unique over the clip (field number x 1000 + instance).
Real smears carry no morphology class: every cell's class is `head`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.data.smears import SmearField
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_dir, atomic_write_json
from sperm_edge.preprocess import decode_image

HEAD_CLASS = "head"


def pan_offsets(field_size: tuple[int, int], size: tuple[int, int], frames: int) -> list[tuple[int, int]]:
    """Window offsets over one field: from the top left corner to the bottom right and back, `frames` of them."""
    span_x, span_y = field_size[0] - size[0], field_size[1] - size[1]
    if span_x < 0 or span_y < 0:
        raise SpermEdgeError(f"a {size[0]}x{size[1]} window does not fit a {field_size[0]}x{field_size[1]} field")
    t = np.abs(np.linspace(-1.0, 1.0, frames))  # 1 -> 0 -> 1: there and back
    return [(int(round((1 - a) * span_x)), int(round((1 - a) * span_y))) for a in t]


def window_truth(field: SmearField, number: int, offset: tuple[int, int], size: tuple[int, int]) -> list[dict]:
    """The field's heads that meet the window at `offset`, boxes in window pixels, clipped, `partial` when cut."""
    (ox, oy), (w, h) = offset, size
    out = []
    for cell in field.cells:
        x0, y0, x1, y1 = (cell["box"][0] - ox, cell["box"][1] - oy, cell["box"][2] - ox, cell["box"][3] - oy)
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            continue
        cut = x0 < 0 or y0 < 0 or x1 > w or y1 > h
        out.append({
            "id": number * 1000 + int(cell["id"]), "box": [max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)],
            "class": HEAD_CLASS, "debris": False, "partial": bool(cell["partial"] or cut),
        })  # fmt: skip
    return out


def write_real_pan(
    fields: list[SmearField],
    out_dir: str | Path,
    frames_per_field: int = 40,
    size: tuple[int, int] = (960, 768),
    fps: float = 15.0,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write OUT_DIR/clip.mp4 + clip.json: a pan of `frames_per_field` frames over each field in turn."""
    if not fields or frames_per_field < 2:
        raise SpermEdgeError("a real pan needs at least one field and 2 frames a field")
    total = len(fields) * frames_per_field
    truth: dict = {"kind": "real-pan", "fps": fps, "size": list(size), "classes": [HEAD_CLASS], "cells": {},
                   "fields": [f.name for f in fields], "frames": []}  # fmt: skip
    with atomic_dir(out_dir, force) as tmp:
        writer = cv2.VideoWriter(str(tmp / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        try:
            if not writer.isOpened():
                raise SpermEdgeError(f"OpenCV cannot write an mp4v video in {tmp}")
            for number, field in enumerate(fields, start=1):
                rgb = decode_image(field.path)
                for cell in field.cells:
                    truth["cells"][str(number * 1000 + int(cell["id"]))] = {"field": field.name, "class": HEAD_CLASS,
                                                                           "debris": False}  # fmt: skip
                for ox, oy in pan_offsets((rgb.shape[1], rgb.shape[0]), size, frames_per_field):
                    window = rgb[oy : oy + size[1], ox : ox + size[0]]
                    writer.write(cv2.cvtColor(np.ascontiguousarray(window), cv2.COLOR_RGB2BGR))
                    index = len(truth["frames"])
                    cells = window_truth(field, number, (ox, oy), size)
                    truth["frames"].append({"index": index, "offset": [ox, oy], "field": field.name, "cells": cells})
                    if progress is not None:
                        progress(index + 1, total)
        finally:
            writer.release()
        atomic_write_json(tmp / "clip.json", truth)
    return Path(out_dir)
