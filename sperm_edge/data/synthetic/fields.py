"""Microscope fields: many cells per frame at known positions and classes, with ground truth.

A field is what the camera on the bench sees: 5-30 cells whose heads do not overlap (their
bounding boxes are kept apart), tails crossing freely, specks and stray tails as clutter.
Each ground-truth cell is a JSON-able dict::

    {"id": 3, "class": "02_Tapered", "shape": "tapered", "defects": [],
     "box": [x0, y0, x1, y1],          # head (or object) mask bounds, x1/y1 exclusive: img[y0:y1, x0:x1]
     "center": [x, y], "angle_deg": 137.5,  # direction of the head tip, image axes (+x towards +y)
     "area_px": 812,                   # mask pixel count
     "polygons": [[[x, y], ...]]}      # outline(s) on a 1/16 px grid; polygon_mask() rasterizes them
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sperm_edge.data.synthetic._io import check_output_file, encode_png
from sperm_edge.data.synthetic._optics import Canvas, background_texture, compose, finish, illumination, sample_look
from sperm_edge.data.synthetic._style import Style, get_style
from sperm_edge.data.synthetic.render import CellSpec, draw_cell, draw_specks, draw_stray_tail, rasterize, sample_cell
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_bytes, atomic_write_json

BOX_GAP = 4  # minimum free pixels between two heads' boxes


def _pick_classes(rng: np.random.Generator, st: Style, n: int, weights: Mapping[str, float] | None) -> list[str]:
    classes = list(st.classes)
    if weights is None:
        return [str(c) for c in rng.choice(classes, size=n)]
    for c in weights:
        st.kind(c)  # unknown names fail with the valid ones
    p = np.array([float(weights.get(c, 0.0)) for c in classes])
    if p.sum() <= 0:
        raise SpermEdgeError("class weights must have a positive sum")
    return [str(c) for c in rng.choice(classes, size=n, p=p / p.sum())]


def _bounds(spec: CellSpec) -> np.ndarray:
    pts = np.concatenate(spec.polygons)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def place_cells(
    rng: np.random.Generator,
    st: Style,
    size: tuple[int, int],
    classes: Sequence[str],
    scale: float,
    tries: int = 60,
) -> list[CellSpec]:
    """Place one cell per entry of ``classes`` fully inside ``size`` (w, h), head boxes apart.

    Cells that find no free spot in ``tries`` attempts are left out (crowded fields).
    """
    w, h = size
    placed: list[CellSpec] = []
    boxes = np.empty((0, 4))
    for cls in classes:
        spec = sample_cell(rng, st, st.kind(cls), (0.0, 0.0), scale=scale, cls=cls)
        b = _bounds(spec)
        lo, hi = -b[:2] + 2, np.array([w, h]) - b[2:] - 3
        if np.any(hi <= lo):
            continue
        for _ in range(tries):
            c = rng.uniform(lo, hi)
            nb = b + np.tile(c, 2)
            free = (nb[0] - BOX_GAP > boxes[:, 2]) | (nb[2] + BOX_GAP < boxes[:, 0])
            free |= (nb[1] - BOX_GAP > boxes[:, 3]) | (nb[3] + BOX_GAP < boxes[:, 1])
            if free.all():
                placed.append(spec.moved(*c))
                boxes = np.vstack([boxes, nb])
                break
    return placed


def cell_record(spec: CellSpec, cell_id: int) -> dict:
    """Ground truth of a drawn cell (see the module docstring), in the canvas it was drawn on."""
    pts = np.concatenate(spec.polygons)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
    mask = rasterize(spec.polygons, (y1 - y0, x1 - x0), (x0, y0)) > 0
    ys, xs = np.nonzero(mask)
    return {
        "id": cell_id,
        "class": spec.cls,
        "shape": spec.shape,
        "defects": list(spec.defects),
        "box": [int(x0 + xs.min()), int(y0 + ys.min()), int(x0 + xs.max() + 1), int(y0 + ys.max() + 1)],
        "center": [round(spec.center[0], 2), round(spec.center[1], 2)],
        "angle_deg": round(float(np.degrees(spec.angle)) % 360.0, 2),
        "area_px": int(mask.sum()),
        "polygons": [p.tolist() for p in spec.polygons],
    }


def draw_clutter(canvas: Canvas, rng: np.random.Generator, scale: float) -> None:
    """Stray tails and specks, in proportion to the canvas area (not ground truth)."""
    h, w = canvas.shape
    area = w * h / (1280 * 960)
    for _ in range(int(rng.poisson(3 * area))):
        draw_stray_tail(canvas, rng, rng.uniform(100, 400) * scale)
    draw_specks(canvas, rng, int(rng.poisson(60 * area)))


def render_field(
    rng: np.random.Generator,
    style: str | Style = "hushem",
    size: tuple[int, int] = (1280, 960),
    n_cells: int | None = None,
    *,
    class_weights: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Render a microscope field of ``size`` (w, h): (image RGB uint8, ground-truth cells).

    ``n_cells`` defaults to a random 5-30; classes are drawn uniformly or by ``class_weights``.
    Fewer cells are returned when a small field cannot hold them all apart.
    """
    st = get_style(style)
    w, h = size
    if n_cells is None:
        n_cells = int(rng.integers(5, 31))
    if n_cells < 0 or w < 32 or h < 32:
        raise SpermEdgeError(f"a field needs n_cells >= 0 and a size of at least 32x32, got {n_cells} and {w}x{h}")
    look = sample_look(rng, st)
    canvas = Canvas(h, w)
    cells = place_cells(rng, st, size, _pick_classes(rng, st, n_cells, class_weights), st.field_scale)
    draw_clutter(canvas, rng, st.field_scale)
    for spec in cells:
        draw_cell(canvas, rng, spec)
    clean = compose(canvas, look, background_texture(rng, h, w) + illumination(rng, h, w))
    return finish(rng, clean, look), [cell_record(s, i) for i, s in enumerate(cells)]


def write_field(
    out: str | Path,
    seed: int = 0,
    style: str | Style = "hushem",
    size: tuple[int, int] = (1280, 960),
    n_cells: int | None = None,
    *,
    force: bool = False,
) -> Path:
    """Write a field as ``out`` (PNG) and its ground truth beside it as ``out`` with ``.json``.

    JSON: ``{"style", "seed", "size": [w, h], "classes": [...], "cells": [cell dicts]}``.
    """
    out = Path(out)
    gt_path = check_output_file(out, ".png", "field", force)
    st = get_style(style)
    image, cells = render_field(np.random.default_rng(seed), st, size, n_cells)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, encode_png(image))
    truth = {"style": st.name, "seed": seed, "size": [size[0], size[1]], "classes": list(st.classes), "cells": cells}
    atomic_write_json(gt_path, truth)
    return out
