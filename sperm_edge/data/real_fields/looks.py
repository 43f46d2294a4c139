"""Independent ways a real-crop field can look: the conditions a localiser tuned on one composition must survive.

The *style* (`library`) says which set the cells come from; the *look* says how the slide and the
camera depart from the plain composition, one condition per look, so that a figure per look says
which condition breaks cell finding:

- ``plain``: seamless pastes, even light, slight defocus (what the bench composed before looks);
- ``tails``: midpieces and tails stained 2-2.5x darker than in their crops (the head is untouched);
- ``halos``: imperfect blending: each pasted crop's glass differs from the field's by a few percent,
  so its rectangle shows, and a bright rim surrounds the cell (mounting-medium halos);
- ``uneven``: strong illumination gradient and vignetting (5x the plain camera's);
- ``defocus``: the whole field out of focus (Gaussian sigma 1.4-2.2 px);
- ``jpeg``: a camera that stores JPEG at quality 30-50;
- ``zoom-out``, ``zoom-in``: another objective, cells at 0.67x and 1.5x their crops' scale;
- ``dense``: half the cells laid against another head, touching or overlapping, and free cells
  closer together.

`HELD_OUT_LOOK` is reported apart by `benchmarks/real_fields.py`: no choice of the localiser, the
verifier or its threshold looked at it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from sperm_edge.data.real_fields.sprites import Sprite
from sperm_edge.errors import SpermEdgeError

HELD_OUT_LOOK = "halos"


@dataclass(frozen=True)
class FieldLook:
    """One look's departures from the plain field (the defaults are the plain field's)."""

    name: str
    tail_gain: tuple[float, float] = (1.0, 1.0)  # density multiplier off the head, drawn per cell
    halo: bool = False  # the crop's rectangle of glass and a bright rim around the cell show
    light: float = 0.5  # multiplies `illumination`'s log-brightness field (gradient and vignetting)
    blur: tuple[float, float] = (0.3, 0.7)  # camera defocus sigma (px), drawn per clip
    jpeg: tuple[int, int] | None = None  # JPEG quality range, drawn per clip; None: frames are not compressed
    scale: float = 1.0  # magnification relative to the crops
    touching: float = 0.15  # share of cells laid against an earlier head
    touch_distance: tuple[float, float] = (0.95, 1.25)  # centre distance of a touching pair, head widths
    spacing: float = 1.8  # other cells' head centres at least this many head widths apart


LOOKS = {
    look.name: look
    for look in (
        FieldLook("plain"),
        FieldLook("tails", tail_gain=(2.0, 2.5)),
        FieldLook("halos", halo=True),
        FieldLook("uneven", light=2.5),
        FieldLook("defocus", blur=(1.4, 2.2)),
        FieldLook("jpeg", jpeg=(30, 50)),
        FieldLook("zoom-out", scale=0.67),
        FieldLook("zoom-in", scale=1.5),
        FieldLook("dense", touching=0.5, touch_distance=(0.7, 1.1), spacing=1.3),
    )
}


def get_look(name: str) -> FieldLook:
    if name not in LOOKS:
        raise SpermEdgeError(f"unknown field look {name!r}; choose one of {', '.join(LOOKS)}")
    return LOOKS[name]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def dress(rng: np.random.Generator, sprite: Sprite, look: FieldLook) -> Sprite:
    """The sprite as `look` pastes it: rescaled, tails darkened, its crop's glass and rim showing."""
    if look.scale != 1.0:
        sprite = _rescaled(sprite, look.scale)
    density, alpha = sprite.density, sprite.alpha
    near_head = cv2.dilate(sprite.head, _disk(2)).astype(np.float32)
    if look.tail_gain != (1.0, 1.0) and not sprite.debris:
        gain = np.float32(rng.uniform(*look.tail_gain))
        density = density * (1 + (gain - 1) * (1 - near_head))[..., None]
    if look.halo:
        cell = (alpha > 0.05).astype(np.uint8)
        rim = (cv2.dilate(cell, _disk(4)) - cell).astype(np.float32)
        glass = rng.uniform(-0.06, 0.06) + rng.uniform(-0.015, 0.015, size=3)
        off_cell = (1 - alpha)[..., None]
        density = alpha[..., None] * density + off_cell * (glass - 0.12 * rim[..., None]).astype(np.float32)
        alpha = np.ones_like(alpha)  # the whole crop is pasted: its edges show as a faint rectangle
    return replace(sprite, density=density.astype(np.float32), alpha=alpha.astype(np.float32))


def _rescaled(sprite: Sprite, scale: float) -> Sprite:
    h, w = sprite.alpha.shape
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    head = (cv2.resize(sprite.head.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)
    if not head.any():
        head = cv2.resize(sprite.head, size, interpolation=cv2.INTER_NEAREST)
    m = cv2.moments(head, binaryImage=True)
    center = (m["m10"] / m["m00"], m["m01"] / m["m00"]) if m["m00"] else (sprite.center[0] * scale,
                                                                          sprite.center[1] * scale)  # fmt: skip
    return replace(
        sprite,
        density=cv2.resize(sprite.density, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR),
        alpha=cv2.resize(sprite.alpha, size, interpolation=cv2.INTER_LINEAR),
        head=head,
        center=center,
    )
