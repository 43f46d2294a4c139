"""Cut one cell out of a real labelled crop, as optical density over the crop's own background.

A crop of HuSHeM or SMIDS shows one head at its centre, often with its tail, neighbours' tails,
other heads near the border, and (HuSHeM) a black border where the scan ended. To move that cell
onto another background, it is turned into a *sprite*:

1. Background colour: per channel, the median of the brighter half of the crop (the glass fills
   most of a crop). Near-black border pixels are set to it.
2. Optical density per channel, ``log(background / pixel)`` (Beer-Lambert): zero on the glass
   whatever the crop's colour, so a sprite lands seamlessly on any background by
   ``pixel = field_background * exp(-alpha * stain * density)``, and overlapping cells add their
   density, as stained layers do.
3. Stain: density (mean over channels) above ``max(0.06, 4 sigma)`` of the glass's own noise.
4. Head: pixels above 20% of the head core's density (the 95th percentile within the central
   disk of radius 15% of the crop), opened with a disk of 1/5 of the set's typical head width to
   cut the tail and midpiece, holes filled; the component nearest the crop centre. **The ground
   truth head box is the bounding box of that region, its centre the region's centroid.**
   For debris (SMIDS ``Non-Sperm``) the object is the stained component nearest the centre; a
   ``Non-Sperm`` crop whose centre holds a head-shaped object (what step 4 finds there is solid,
   head-sized and no more elongated than heads) is label noise for this purpose and not used.
5. Alpha: the stained component that holds the head (head, midpiece, tail), grown by 2 px and
   feathered; other heads in the crop (head-like regions of at least 30% of its area) are cut
   out so that no unlabelled head is pasted with it; it fades to 0 over the crop's last 10 px, so
   what the crop cut off ends softly. For debris the ground-truth box is all of its alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.localize import DARK_BORDER, background_colour

HEAD_LEVEL = 0.2  # head = density above this share of the head core's (pale acrosomes included)


@dataclass
class Sprite:
    """A cell (or debris) ready to paste: density (h, w, 3), alpha (h, w), head mask and centre, all float32."""

    cls: str
    source: str  # path of the crop relative to the data folder
    density: np.ndarray
    alpha: np.ndarray
    head: np.ndarray  # uint8 mask of the head (or debris object)
    center: tuple[float, float]  # head centroid, crop pixels
    background: np.ndarray  # (3,) RGB of the crop's glass
    debris: bool

    @property
    def head_box(self) -> tuple[int, int, int, int]:
        x, y, w, h = cv2.boundingRect(self.head)
        return x, y, x + w, y + h


def _disk(radius: int) -> np.ndarray:
    size = 2 * max(1, radius) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _nearest_component(mask: np.ndarray, point: tuple[float, float], min_area: int = 4) -> np.ndarray | None:
    """The connected component of `mask` nearest `point` (containing it if any does), as uint8."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    px, py = int(round(point[0])), int(round(point[1]))
    h, w = mask.shape
    inside = labels[min(max(py, 0), h - 1), min(max(px, 0), w - 1)]
    if inside > 0 and stats[inside, cv2.CC_STAT_AREA] >= min_area:
        return (labels == inside).astype(np.uint8)
    best, best_d = None, np.inf
    ys, xs = np.nonzero(labels)
    d2 = (xs - px) ** 2 + (ys - py) ** 2
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < min_area:
            continue
        sel = labels[ys, xs] == k
        d = float(d2[sel].min())
        if d < best_d:
            best, best_d = k, d
    return None if best is None else (labels == best).astype(np.uint8)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(mask)
    cv2.drawContours(out, contours, -1, 1, -1)
    return out


def _edge_fade(h: int, w: int, ramp: float = 10.0) -> np.ndarray:
    """1 inside, falling to 0 at the crop's edge over `ramp` px: what the crop cut off fades, not a straight edge."""
    y = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
    x = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
    return np.clip(np.minimum(x, y) / ramp, 0.0, 1.0).astype(np.float32)


def _head_like(mask: np.ndarray, head_width: float) -> bool:
    """Solid, of a head's area (0.4-2.5x a typical head's) and no more elongated than 2.6:1."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(contour)
    hull = cv2.contourArea(cv2.convexHull(contour))
    if len(contour) < 5 or hull <= 0:
        return False
    axes = cv2.fitEllipse(contour)[1]
    elongation = max(axes) / max(min(axes), 1e-3)
    return 0.4 * head_width**2 <= area <= 2.5 * head_width**2 and area / hull > 0.88 and elongation < 2.6


def crop_density(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel optical density over the crop's glass (h, w, 3), its channel mean (h, w), and the glass RGB."""
    img = rgb.astype(np.float32)
    bg = background_colour(rgb)
    border = cv2.dilate((rgb.max(axis=2) < DARK_BORDER).astype(np.uint8), _disk(2)) > 0
    img[border] = bg
    density = np.log(bg / np.maximum(img, 1.0)).astype(np.float32)
    return density, density.mean(axis=2), bg


def _heads(od: np.ndarray, head_width: float) -> tuple[np.ndarray | None, np.ndarray]:
    """The head nearest the centre (uint8 mask, holes filled; None if none) and every head-like region."""
    h, w = od.shape
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    yy, xx = np.mgrid[0:h, 0:w]
    core = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= (0.15 * min(h, w)) ** 2
    peak = float(np.percentile(od[core], 95))
    thick = cv2.morphologyEx((od > HEAD_LEVEL * peak).astype(np.uint8), cv2.MORPH_OPEN, _disk(round(head_width / 5)))
    head = _nearest_component(thick, centre, min_area=int(0.1 * head_width**2))
    return (None if head is None else _fill_holes(head)), thick


def head_mask(rgb: np.ndarray, head_width: float | None = None) -> np.ndarray | None:
    """The head at the centre of a head-centred crop (uint8 mask), or None; `head_width` defaults to 1/5 of the crop."""
    _, od, _ = crop_density(rgb)
    return _heads(od, head_width or 0.2 * min(od.shape))[0]


def make_sprite(rgb: np.ndarray, cls: str, source: str | Path, debris: bool, head_width: float) -> Sprite | None:
    """The sprite of the cell at the centre of `rgb` (uint8 RGB); None when no stained object is found there.

    `head_width` is the data set's typical head width in crop pixels (sets the opening that cuts tails).
    """
    density, od, bg = crop_density(rgb)
    h, w = od.shape
    glass = od[(od < np.percentile(od, 60))]
    if glass.size == 0:  # a flat crop: all of it is glass
        glass = od.ravel()
    sigma = 1.4826 * float(np.median(np.abs(glass - np.median(glass))))
    stain = (od > max(0.06, 4.0 * sigma)).astype(np.uint8)
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    head, thick = _heads(od, head_width)
    if debris:
        if head is not None and _head_like(head, head_width):
            return None
        obj = _nearest_component(cv2.morphologyEx(stain, cv2.MORPH_OPEN, _disk(1)), centre, min_area=20)
        if obj is None:
            return None
        head = _fill_holes(obj)
        others = np.zeros_like(head)
    else:
        if head is None:
            return None
        others = np.clip(thick - head, 0, 1).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(others)
        big = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= 0.3 * head.sum()]
        others = np.isin(labels, big).astype(np.uint8)
    linked = _nearest_component(cv2.dilate(stain | head, _disk(1)), centre)
    cell = (linked if linked is not None else head) | head
    cell[cv2.dilate(others, _disk(4)) > 0] = 0
    cell |= head
    if debris:
        head = cell.copy()  # the debris' box is all of it that is pasted
    alpha = cv2.GaussianBlur(cv2.dilate(cell, _disk(2)).astype(np.float32), (0, 0), 1.2)
    alpha *= _edge_fade(h, w)
    m = cv2.moments(head, binaryImage=True)
    center = (m["m10"] / m["m00"], m["m01"] / m["m00"])
    return Sprite(cls, Path(source).as_posix(), density, alpha, head, center, bg, debris)


def render(sprite: Sprite, glass: np.ndarray, stain: float = 1.0) -> np.ndarray:
    """The sprite on flat `glass` (RGB), as a slide renders it: ``glass * exp(-alpha * stain * density)``, uint8."""
    light = np.asarray(glass, np.float32)[None, None, :] * np.exp(
        -(sprite.alpha * np.float32(stain))[..., None] * sprite.density
    )
    return np.clip(np.rint(light), 0, 255).astype(np.uint8)


def cell_alone(rgb: np.ndarray) -> np.ndarray | None:
    """The head-centred crop `rgb` with only its centre cell, on the crop's own glass (None: no head found there).

    What the real-field bench pastes of a crop: the neighbours, other tails and the glass's texture are
    gone. Training on such views (`AugmentConfig.alone_p`) teaches a classifier to answer for the cell
    and not its surroundings, which a field never reproduces.
    """
    sprite = make_sprite(rgb, "", "", False, 0.2 * min(rgb.shape[:2]))
    return None if sprite is None else render(sprite, sprite.background)
