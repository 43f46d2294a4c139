"""Lay real-cell sprites out on a slide: rotation, position, stain intensity, touching pairs, debris.

The slide is built as optical density (Beer-Lambert): each sprite adds ``alpha * stain * density``,
so overlapping cells darken where they overlap, and the slide's image is
``background * exp(-density)`` with the glass's own faint texture. ``stain`` (per cell, drawn in
``STAIN_RANGE``) varies the staining from pale to dark. A share of the cells (``touching``) is
put beside an earlier head, ``touch_distance`` head widths from its centre (touching or
overlapping); otherwise head centres are kept ``spacing`` head widths apart. Debris may lie on
tails, not within a head width of a head.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sperm_edge.data.real_fields.sprites import Sprite

STAIN_RANGE = (0.55, 1.25)


@dataclass
class Placed:
    """A sprite on the slide: head box (x0, y0, x1, y1, exclusive) and centre in slide pixels."""

    id: int
    sprite: Sprite
    box: tuple[int, int, int, int]
    center: tuple[float, float]
    angle: float
    stain: float
    touching: bool

    def record(self) -> dict:
        return {
            "class": self.sprite.cls,
            "debris": self.sprite.debris,
            "source": self.sprite.source,
            "box": list(self.box),
            "center": [round(self.center[0], 1), round(self.center[1], 1)],
            "angle_deg": round(self.angle, 1),
            "stain": round(self.stain, 3),
            "touching": self.touching,
        }


def _rotated(sprite: Sprite, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Density, alpha and head mask rotated by `angle` degrees about the head centre, on a canvas that holds them."""
    h, w = sprite.alpha.shape
    side = int(np.ceil(np.hypot(h, w))) + 2
    cx, cy = sprite.center
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    m[:, 2] += (side / 2 - cx, side / 2 - cy)
    warp = {"dsize": (side, side), "flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    density = cv2.warpAffine(sprite.density, m, **warp)
    alpha = cv2.warpAffine(sprite.alpha, m, **warp)
    head = cv2.warpAffine(sprite.head.astype(np.float32), m, **warp) > 0.5
    return density, alpha, head.astype(np.uint8), (side / 2, side / 2)


class SlideBuilder:
    """Accumulates sprites' density on a (w, h) slide; `place` returns where a sprite went, or None."""

    def __init__(
        self,
        size: tuple[int, int],
        head_width: float,
        spacing: float = 1.8,
        touch_distance: tuple[float, float] = (0.95, 1.25),
    ) -> None:
        self.size, self.head_width, self.spacing, self.touch_distance = size, head_width, spacing, touch_distance
        w, h = size
        self.density = np.zeros((h, w, 3), np.float32)
        self.placed: list[Placed] = []

    def _free(self, center: np.ndarray, touching: bool) -> bool:
        heads = [p for p in self.placed if not p.sprite.debris]
        if not heads:
            return True
        d = np.hypot(*(np.array([p.center for p in heads]) - center).T)
        return bool(d.min() >= (self.touch_distance[0] - 0.05 if touching else self.spacing) * self.head_width)

    def _clear_of_heads(self, box: tuple[int, int, int, int]) -> bool:
        """No head centre within `box` grown by one head width: debris lies beside cells, not on their heads."""
        g = self.head_width
        x0, y0, x1, y1 = box[0] - g, box[1] - g, box[2] + g, box[3] + g
        return not any(x0 <= p.center[0] <= x1 and y0 <= p.center[1] <= y1 for p in self.placed if not p.sprite.debris)

    def place(self, rng: np.random.Generator, sprite: Sprite, touching: bool = False, tries: int = 40) -> Placed | None:
        w, h = self.size
        margin = self.head_width
        angle = float(rng.uniform(0, 360))
        density, alpha, head, (hx, hy) = _rotated(sprite, angle)
        ys, xs = np.nonzero(head)
        if not len(xs):
            return None
        heads = [p for p in self.placed if not p.sprite.debris]
        for _ in range(tries):
            if touching and heads:
                anchor = heads[int(rng.integers(len(heads)))]
                theta = rng.uniform(0, 2 * np.pi)
                dist = rng.uniform(*self.touch_distance) * self.head_width
                center = np.array(anchor.center) + dist * np.array([np.cos(theta), np.sin(theta)])
            else:
                center = rng.uniform([margin, margin], [w - margin, h - margin])
            if not (margin <= center[0] <= w - margin and margin <= center[1] <= h - margin):
                continue
            ox, oy = int(round(center[0] - hx)), int(round(center[1] - hy))
            box = (ox + int(xs.min()), oy + int(ys.min()), ox + int(xs.max()) + 1, oy + int(ys.max()) + 1)
            if self._clear_of_heads(box) if sprite.debris else self._free(center, touching and bool(heads)):
                break
        else:
            return None
        stain = 1.0 if sprite.debris else float(rng.uniform(*STAIN_RANGE))
        self._add(density, alpha, ox, oy, stain)
        placed = Placed(len(self.placed), sprite, box, (ox + float(xs.mean()), oy + float(ys.mean())), angle, stain,
                        touching and bool(heads))  # fmt: skip
        self.placed.append(placed)
        return placed

    def _add(self, density: np.ndarray, alpha: np.ndarray, ox: int, oy: int, stain: float) -> None:
        w, h = self.size
        sh, sw = alpha.shape
        x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + sw, w), min(oy + sh, h)
        if x0 >= x1 or y0 >= y1:
            return
        a = alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox, None] * np.float32(stain)
        self.density[y0:y1, x0:x1] += a * density[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
