"""Draw stained sperm cells and debris, and render single-cell crops like the real data sets.

A cell is first *sampled* (``sample_cell``: class -> head shape, defects, size, position,
orientation and its outline polygons) and then *drawn* (``draw_cell``) into a ``Canvas`` of
stain densities: the head with a lighter acrosome cap and a darker post-acrosomal region,
an occasional vacuole, a rim, a phase halo, then the midpiece and a waving tail. Colours are
applied later, per image, by ``_optics`` — never per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from sperm_edge.data.synthetic import shapes
from sperm_edge.data.synthetic._optics import (
    Canvas,
    background_texture,
    compose,
    finish,
    illumination,
    sample_look,
    smooth_noise,
)
from sperm_edge.data.synthetic._style import Style, get_style

_SHIFT = 4  # fillPoly sub-pixel bits: polygons are kept on a 1/16 px grid
_ABNORMAL_HEADS = ("tapered", "pyriform", "amorphous", "normal")
_NECK_TAIL_DEFECTS = ("bent_neck", "coiled_tail", "droplet", "thick_midpiece")


@dataclass
class CellSpec:
    """One object on the slide, before it is drawn. Coordinates are canvas pixels (x, y)."""

    cls: str | None  # class name in its style, None for clutter that is not ground truth
    shape: str  # head shape (shapes.HEAD_SHAPES) or debris type: round_cell, clump, fragment
    center: tuple[float, float]
    angle: float  # radians, direction of the anterior tip (image coordinates, +x towards +y)
    area: float  # head (or object) area in px^2
    polygons: list[np.ndarray] = field(default_factory=list)  # outline(s) of the head or object
    defects: tuple[str, ...] = ()
    radius: float = 0.0  # distance from center that contains every polygon

    @property
    def is_sperm(self) -> bool:
        """True for a sperm cell (head, midpiece, tail); False for debris."""
        return self.shape in shapes.HEAD_SHAPES

    def moved(self, dx: float, dy: float) -> CellSpec:
        """The same cell, shifted by (dx, dy)."""
        d = np.array([dx, dy])
        return CellSpec(
            self.cls, self.shape, (self.center[0] + dx, self.center[1] + dy), self.angle, self.area,
            [p + d for p in self.polygons], self.defects, self.radius,
        )  # fmt: skip


def _snap(pts: np.ndarray) -> np.ndarray:
    """Round to the 1/16 px grid that the rasterizer uses, so polygons and masks agree exactly."""
    return np.round(pts * (1 << _SHIFT)) / (1 << _SHIFT)


def sample_cell(
    rng: np.random.Generator,
    style: Style,
    kind: str,
    center: tuple[float, float],
    scale: float = 1.0,
    cls: str | None = None,
) -> CellSpec:
    """Sample a cell of ``kind`` (see ``_style.KINDS``) at ``center``; ``scale`` multiplies lengths."""
    area = rng.uniform(*style.head_area) * scale**2
    angle = rng.uniform(0, 2 * np.pi)
    defects: tuple[str, ...] = ()
    if kind == "abnormal":
        shape = str(rng.choice(_ABNORMAL_HEADS, p=[0.25, 0.2, 0.3, 0.25]))
        if shape == "normal" or rng.uniform() < 0.25:
            defects = (str(rng.choice(_NECK_TAIL_DEFECTS)),)
    elif kind == "debris":
        shape = str(rng.choice(("round_cell", "clump", "fragment"), p=[0.3, 0.5, 0.2]))
    else:
        shape = kind
    if shape in shapes.HEAD_SHAPES:
        polys = [shapes.transform(shapes.head_outline(rng, shape), np.sqrt(area), angle, center)]
    elif shape == "round_cell":
        area *= rng.uniform(2.0, 4.5)
        polys = [shapes.transform(shapes.blob_outline(rng, rng.uniform(0.03, 0.1)), np.sqrt(area), angle, center)]
    elif shape == "fragment":
        area *= rng.uniform(0.3, 1.2)
        polys = [shapes.transform(shapes.blob_outline(rng, rng.uniform(0.15, 0.3)), np.sqrt(area), angle, center)]
    else:  # clump of stained debris
        spread = np.sqrt(area) * rng.uniform(0.6, 1.4)
        polys = []
        for _ in range(int(rng.integers(6, 24))):
            off = rng.normal(0, spread * 0.5, size=2).clip(-spread, spread)
            size = np.sqrt(rng.uniform(4, 0.12 * area))
            blob = shapes.blob_outline(rng, rng.uniform(0.1, 0.35), n_points=16)
            polys.append(shapes.transform(blob, size, rng.uniform(0, 6.3), np.add(center, off)))
    polys = [_snap(p) for p in polys]
    c = np.asarray(center)
    radius = max(float(np.max(np.linalg.norm(p - c, axis=1))) for p in polys)
    return CellSpec(cls, shape, (float(center[0]), float(center[1])), float(angle), float(area), polys, defects, radius)


def rasterize(
    polygons: list[np.ndarray], shape: tuple[int, int], offset: tuple[int, int] = (0, 0), aa: bool = False
) -> np.ndarray:
    """Fill polygons (each drawn separately: a union) into a uint8 (h, w) image, 255 inside.

    ``offset`` (x0, y0) is the canvas position of the image's top-left pixel. Pixel (x, y) is the
    unit square centred on integer (x, y). Without ``aa`` the result is the exact ground-truth mask.
    """
    img = np.zeros(shape, np.uint8)
    o = np.array(offset, dtype=np.float64)
    for p in polygons:
        pts = np.round((p - o) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(img, [pts], 255, cv2.LINE_AA if aa else cv2.LINE_8, _SHIFT)
    return img


def polygon_mask(polygons: list, size: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask (bool, h x w) of a cell's ``polygons`` (as stored in JSON) in an image of ``size`` (w, h)."""
    return rasterize([np.asarray(p, dtype=np.float64) for p in polygons], (size[1], size[0])) > 0


def _polyline(layer: np.ndarray, pts: np.ndarray, value: float, thickness: int = 1) -> None:
    """Anti-aliased open polyline with sub-pixel points into a uint8 layer."""
    pts16 = np.round(pts * (1 << _SHIFT)).astype(np.int32)
    cv2.polylines(layer, [pts16], False, int(value), thickness, cv2.LINE_AA, _SHIFT)


def _disc(layer: np.ndarray, center: np.ndarray, radius: float, value: float) -> None:
    """Anti-aliased filled disc with a sub-pixel centre and radius into a uint8 layer."""
    c = np.round(np.asarray(center) * (1 << _SHIFT)).astype(int).tolist()
    cv2.circle(layer, c, int(round(radius * (1 << _SHIFT))), int(value), -1, cv2.LINE_AA, _SHIFT)


def _patch(canvas: Canvas, polys: list[np.ndarray], margin: int) -> tuple[int, int, int, int] | None:
    allp = np.concatenate(polys)
    h, w = canvas.shape
    x0, y0 = np.floor(allp.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(allp.max(axis=0)).astype(int) + margin + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _draw_head(canvas: Canvas, rng: np.random.Generator, spec: CellSpec) -> None:
    """Head densities: acrosome cap (light, pink-purple) and dark post-acrosomal region, rim, vacuoles, halo."""
    box = _patch(canvas, spec.polygons, 8)
    if box is None:
        return
    x0, y0, x1, y1 = box
    cov = rasterize(spec.polygons, (y1 - y0, x1 - x0), (x0, y0), aa=True).astype(np.float32) / 255.0
    c, s = np.cos(spec.angle), np.sin(spec.angle)
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(spec.center[0]))[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(spec.center[1]))[:, None]
    half = float(np.max((spec.polygons[0] - spec.center) @ np.array([c, s])))
    u = (dx * c + dy * s) / half  # -1 at the neck, +1 at the tip
    v = dy * c - dx * s  # across the head
    boundary = rng.uniform(-0.2, 0.3)
    cap = 1.0 / (1.0 + np.exp(-(u - boundary) / rng.uniform(0.1, 0.25)))
    # post-acrosomal region darkest towards the neck, acrosome cap light; a little side shading
    post = (1.0 - cap) * (1.0 + rng.uniform(0.0, 0.4) * np.clip(-u, 0, None))
    nuclear = rng.uniform(0.95, 1.45) * (post + rng.uniform(0.1, 0.4) * cap)
    nuclear *= (
        1.0
        + rng.uniform(-0.3, 0.3) * v / half
        + rng.uniform(0.05, 0.2) * smooth_noise(rng, y1 - y0, x1 - x0, rng.uniform(5, 12))
    )
    rim = np.clip(cov - cv2.GaussianBlur(cov, (0, 0), 1.2), 0, None)
    nuclear += rng.uniform(0.4, 1.2) * rim
    if rng.uniform() < 0.15:  # vacuoles: soft pale spots
        for _ in range(int(rng.integers(1, 3))):
            r = np.sqrt(spec.area) * rng.uniform(0.08, 0.15)
            cu, cv = rng.uniform(-0.4, 0.6) * half, rng.uniform(-0.3, 0.3) * half * 0.5
            d2 = ((dx * c + dy * s - cu) ** 2 + (v - cv) ** 2) / r**2
            nuclear *= 1.0 - rng.uniform(0.25, 0.5) * np.exp(-d2)
    acro = rng.uniform(0.2, 0.6) * cap
    canvas.od[y0:y1, x0:x1, Canvas.NUCLEAR] += nuclear * cov
    canvas.od[y0:y1, x0:x1, Canvas.ACROSOME] += acro * cov
    halo = cv2.GaussianBlur(cov, (0, 0), rng.uniform(1.5, 2.5)) - cov
    canvas.od[y0:y1, x0:x1, Canvas.HALO] += np.clip(halo, 0, None) * 2.0


def _draw_flagellum(canvas: Canvas, rng: np.random.Generator, spec: CellSpec) -> None:
    """Midpiece (thick, dark) and principal piece (thin, fading), anti-aliased into ``canvas.lines``."""
    neck = spec.polygons[0][len(spec.polygons[0]) // 2]
    head_len = 2.0 * float(np.max(np.linalg.norm(spec.polygons[0] - np.asarray(spec.center), axis=1)))
    heading = spec.angle + np.pi + rng.normal(0, 0.12)
    if "bent_neck" in spec.defects:
        heading += rng.choice([-1, 1]) * rng.uniform(0.6, 1.4)
    width = max(1, int(round(np.sqrt(spec.area) * rng.uniform(0.045, 0.085))))
    if "thick_midpiece" in spec.defects:
        width *= 2
    mid = shapes.tail_path(rng, neck, heading, head_len * rng.uniform(0.7, 1.2), step=1.5)
    _polyline(canvas.lines, mid, rng.integers(120, 190), width)
    end_heading = float(np.arctan2(*(mid[-1] - mid[-2])[::-1])) if len(mid) > 1 else heading
    if "droplet" in spec.defects:
        p = mid[int(len(mid) * rng.uniform(0.2, 0.7))]
        _disc(canvas.lines, p, np.sqrt(spec.area) * rng.uniform(0.18, 0.3), 95)
    curl = rng.choice([-1, 1]) * rng.uniform(0.04, 0.09) if "coiled_tail" in spec.defects else 0.0
    length = head_len * (rng.uniform(1.5, 3.5) if curl else rng.uniform(3.0, 10.0))
    tail = shapes.tail_path(rng, mid[-1], end_heading, length, curl=curl)
    value = rng.uniform(90, 150)
    for i, part in enumerate(np.array_split(tail, 3)):
        if len(part) > 1:
            _polyline(canvas.lines, part, value * (1.0 - 0.22 * i))


def _draw_debris(canvas: Canvas, rng: np.random.Generator, spec: CellSpec) -> None:
    """Round cells (pale cytoplasm, dark lobed nucleus), dark fragments, clumps of stained debris."""
    box = _patch(canvas, spec.polygons, 8)
    if box is None:
        return
    x0, y0, x1, y1 = box
    shape_hw = (y1 - y0, x1 - x0)
    grain = 1.0 + rng.uniform(0.1, 0.35) * smooth_noise(rng, *shape_hw, rng.uniform(2.5, 6))
    if spec.shape == "round_cell":
        cov = rasterize(spec.polygons, shape_hw, (x0, y0), aa=True).astype(np.float32) / 255.0
        canvas.od[y0:y1, x0:x1, Canvas.ACROSOME] += cov * rng.uniform(0.15, 0.45) * grain
        canvas.od[y0:y1, x0:x1, Canvas.NUCLEAR] += cov * rng.uniform(0.03, 0.15) * grain
        r = np.sqrt(spec.area / np.pi)
        lobes = []
        for _ in range(int(rng.integers(1, 4))):
            off = rng.normal(0, 0.25 * r, 2)
            blob = shapes.blob_outline(rng, rng.uniform(0.05, 0.2), 24)
            size = np.sqrt(spec.area * rng.uniform(0.06, 0.2))
            lobes.append(shapes.transform(blob, size, 0.0, np.add(spec.center, off)))
        nuc = rasterize(lobes, shape_hw, (x0, y0), aa=True).astype(np.float32) / 255.0
        canvas.od[y0:y1, x0:x1, Canvas.NUCLEAR] += nuc * cov * rng.uniform(0.6, 1.3) * grain
    else:
        cov = np.zeros(shape_hw, np.float32)
        dens = np.zeros(shape_hw, np.float32)
        for p in spec.polygons:
            blob = rasterize([p], shape_hw, (x0, y0), aa=True).astype(np.float32) / 255.0
            dens = np.maximum(dens, blob * rng.uniform(0.15, 1.1))
            cov = np.maximum(cov, blob)
        smudge = cv2.GaussianBlur(cov, (0, 0), rng.uniform(2.0, 6.0))
        dens = cv2.GaussianBlur(dens, (0, 0), rng.uniform(0.3, 1.2)) + smudge * rng.uniform(0.0, 0.6)
        canvas.od[y0:y1, x0:x1, Canvas.NUCLEAR] += dens * grain
        canvas.od[y0:y1, x0:x1, Canvas.ACROSOME] += dens * grain * rng.uniform(0.2, 0.8)
    canvas.od[y0:y1, x0:x1, Canvas.HALO] += np.clip(cv2.GaussianBlur(cov, (0, 0), 2.0) - cov, 0, None) * 1.5


def draw_cell(canvas: Canvas, rng: np.random.Generator, spec: CellSpec) -> None:
    """Draw ``spec`` into ``canvas`` (parts outside the canvas are clipped)."""
    if spec.is_sperm:
        _draw_flagellum(canvas, rng, spec)
        _draw_head(canvas, rng, spec)
    else:
        _draw_debris(canvas, rng, spec)


def draw_specks(canvas: Canvas, rng: np.random.Generator, count: int) -> None:
    """Tiny stained particles and dust that every smear has (not ground truth)."""
    h, w = canvas.shape
    for _ in range(count):
        _disc(canvas.lines, rng.uniform((0, 0), (w, h)), rng.uniform(0.5, 2.2), rng.integers(40, 200))


def draw_stray_tail(canvas: Canvas, rng: np.random.Generator, length: float) -> None:
    """A tail whose cell lies outside the view, crossing it."""
    h, w = canvas.shape
    tail = shapes.tail_path(rng, rng.uniform((0, 0), (w, h)), rng.uniform(0, 2 * np.pi), length)
    _polyline(canvas.lines, tail, rng.integers(90, 160))


def _neighbours(rng: np.random.Generator, style: Style, canvas: Canvas, main: CellSpec) -> None:
    """One or two cells around the centred one, often cut by the crop edge (not ground truth)."""
    h, w = canvas.shape
    for _ in range(int(rng.integers(1, 3))):
        spec = sample_cell(rng, style, str(rng.choice(list(style.class_kinds.values()))), (0.0, 0.0))
        for _try in range(10):  # towards the edges, as neighbours in the real crops are
            a, r = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.75) * max(w, h)
            pos = (main.center[0] + r * np.cos(a), main.center[1] + r * np.sin(a))
            if np.hypot(pos[0] - main.center[0], pos[1] - main.center[1]) > spec.radius + main.radius + 6:
                draw_cell(canvas, rng, spec.moved(*pos))
                break


def render_cell(
    rng: np.random.Generator,
    cls: str,
    style: str | Style = "hushem",
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one crop centred on a cell of class ``cls``: (image RGB uint8 (h, w, 3), head mask bool (h, w)).

    ``size`` is (width, height); by default the style's crop size (HuSHeM 131x131, SMIDS varied).
    The mask is the head (for ``Non-Sperm``: the object) of the centred cell only.
    """
    st = get_style(style)
    kind = st.kind(cls)
    w, h = size if size is not None else st.sample_crop_size(rng)
    canvas = Canvas(h, w)
    look = sample_look(rng, st)
    jitter = rng.normal(0, 0.025 * min(w, h), 2)
    main = sample_cell(rng, st, kind, (w / 2 - 0.5 + jitter[0], h / 2 - 0.5 + jitter[1]), cls=cls)
    if rng.uniform() < st.neighbour_prob:
        _neighbours(rng, st, canvas, main)
    for _ in range(int(rng.poisson(0.8))):
        draw_stray_tail(canvas, rng, rng.uniform(0.5, 2.0) * max(w, h))
    draw_specks(canvas, rng, int(rng.poisson(3 * w * h / 131**2)))
    draw_cell(canvas, rng, main)
    clean = compose(canvas, look, background_texture(rng, h, w) + illumination(rng, h, w))
    image = finish(rng, clean, look)
    return image, rasterize(main.polygons, (h, w)) > 0
