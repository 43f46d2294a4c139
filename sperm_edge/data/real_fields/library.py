"""The labelled crops a real-cell field is composed from: which set, which classes, how large a head is.

``DATA`` is a folder holding the real sets as released (``hushem/`` and ``smids/``, class folders
inside, as in ``../shared/data``). A *style* names the set the cells come from; debris always
comes from SMIDS ``Non-Sperm`` (for the HuSHeM style, only when ``smids/`` is there too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sperm_edge.data.folder import _class_dirs
from sperm_edge.data.real_fields.sprites import Sprite, make_sprite
from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import decode_image

log = logging.getLogger(__name__)

DEBRIS_SET, DEBRIS_CLASS = "smids", "Non-Sperm"


@dataclass(frozen=True)
class RealStyle:
    """A set's layout: folder, sperm classes, typical head width (sqrt of head area, crop px), debris share."""

    name: str
    folder: str
    classes: tuple[str, ...]
    head_width: float
    debris: float  # debris objects per sperm cell
    debris_required: bool


REAL_STYLES = {
    "hushem": RealStyle("hushem", "hushem", ("01_Normal", "02_Tapered", "03_Pyriform", "04_Amorphous"), 28.0, 0.1,
                        False),
    "smids": RealStyle("smids", "smids", ("Abnormal_Sperm", "Normal_Sperm"), 34.0, 0.35, True),
}  # fmt: skip


def get_real_style(name: str) -> RealStyle:
    if name not in REAL_STYLES:
        raise SpermEdgeError(f"unknown real-field style {name!r}; choose one of {', '.join(REAL_STYLES)}")
    return REAL_STYLES[name]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def crop_paths(data: str | Path, style: RealStyle) -> tuple[dict[str, list[Path]], list[Path]]:
    """Crop files per sperm class, and the debris crops; a clear error when the folder is not a data set."""
    root = Path(data)
    if not root.is_dir():
        raise SpermEdgeError(f"data folder not found: {root} (give the folder holding hushem/ and smids/)")
    base = root / style.folder
    if not base.is_dir():
        raise SpermEdgeError(f"data folder {root} has no {style.folder}/ set (expected {root / style.folder})")
    found = {d.name: d for d in _class_dirs(base)}
    missing = [c for c in style.classes if c not in found]
    if missing:
        raise SpermEdgeError(f"{base} lacks the class folder(s) {missing}; expected {list(style.classes)}")
    per_class = {c: _images(found[c]) for c in style.classes}
    empty = [c for c, paths in per_class.items() if not paths]
    if empty:
        raise SpermEdgeError(f"class folder(s) {empty} under {base} hold no images")
    debris_dir = root / DEBRIS_SET / DEBRIS_CLASS
    debris = _images(debris_dir) if debris_dir.is_dir() else []
    if style.debris_required and not debris:
        raise SpermEdgeError(f"no debris crops at {debris_dir} (the {style.name} style needs them)")
    return per_class, debris


def draw_sprites(
    rng: np.random.Generator, data: str | Path, style: RealStyle, n_cells: int, n_debris: int
) -> tuple[list[Sprite], list[Sprite]]:
    """`n_cells` sperm sprites (classes drawn uniformly, crops without repeats while they last) and `n_debris` debris.

    A crop in which no head (or, for debris, a non-head object) is found at the centre is skipped.
    """
    per_class, debris_paths = crop_paths(data, style)
    root = Path(data)
    debris_width = REAL_STYLES[DEBRIS_SET].head_width
    pools = {c: list(rng.permutation(len(p))) for c, p in per_class.items()}
    cells: list[Sprite] = []
    tries = 0
    while len(cells) < n_cells and tries < 20 * max(1, n_cells):
        tries += 1
        cls = str(style.classes[int(rng.integers(len(style.classes)))])
        if not pools[cls]:
            pools[cls] = list(rng.permutation(len(per_class[cls])))
        path = per_class[cls][int(pools[cls].pop())]
        sprite = _sprite(path, root, cls, False, style.head_width)
        if sprite is not None:
            cells.append(sprite)
    debris: list[Sprite] = []
    order = list(rng.permutation(len(debris_paths)))
    while len(debris) < n_debris and order:
        sprite = _sprite(debris_paths[int(order.pop())], root, DEBRIS_CLASS, True, debris_width)
        if sprite is not None:
            debris.append(sprite)
    if len(cells) < n_cells:
        raise SpermEdgeError(f"found a head in only {len(cells)} of the crops tried under {root / style.folder}")
    return cells, debris


def _sprite(path: Path, root: Path, cls: str, debris: bool, head_width: float) -> Sprite | None:
    try:
        rgb = decode_image(path)
    except SpermEdgeError as err:
        log.warning("skipped %s", err)
        return None
    return make_sprite(rgb, cls, path.relative_to(root), debris, head_width)
