"""Write a class-folder data set of synthetic crops, laid out like the real HuSHeM and SMIDS sets.

Layout of ``OUT``::

    OUT/<class>/synth_00000.png        one folder per class, as in the real sets
    OUT/_masks/<class>/synth_00000.png head masks (0/255), mirroring the class folders
    OUT/_synthetic.json                how the set was made (style, seed, counts)

Folder readers ignore sub-folders whose names start with ``_`` or ``.``, so ``_masks`` is never
taken for a class. Crop ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the set is
identical for a seed whatever the order or process that renders it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sperm_edge.data.synthetic._io import check_target, encode_png
from sperm_edge.data.synthetic._style import Style, get_style
from sperm_edge.data.synthetic.render import render_cell
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

MASKS_DIR = "_masks"
META_FILE = "_synthetic.json"


def class_plan(n: int, classes: tuple[str, ...]) -> list[str]:
    """Class of each of ``n`` crops: balanced, interleaved (crop i has class i mod k)."""
    return [classes[i % len(classes)] for i in range(n)]


def render_crop(seed: int, index: int, cls: str, style: str | Style) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``index`` of the set made with ``seed``: (image RGB uint8, head mask bool)."""
    return render_cell(np.random.default_rng([seed, index]), cls, style)


def write_crop_dataset(
    out: str | Path,
    n: int,
    style: str | Style = "hushem",
    seed: int = 0,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``n`` crops (balanced over the style's classes) with masks into ``out``; return ``out``.

    Builds the set in a temporary folder beside ``out`` and renames it into place, so ``out`` is
    either complete or absent. An existing non-empty ``out`` is refused unless ``force``.
    ``progress(done, total)`` is called after each crop.
    """
    st = get_style(style)
    out = Path(out)
    if n < 1:
        raise SpermEdgeError(f"number of crops must be at least 1, got {n}")
    plan = class_plan(n, st.classes)
    start = time.perf_counter()
    check_target(out, force)
    with atomic_dir(out, force=True) as tmp:
        for cls in st.classes:
            (tmp / cls).mkdir()
            (tmp / MASKS_DIR / cls).mkdir(parents=True)
        for i, cls in enumerate(plan):
            image, mask = render_crop(seed, i, cls, st)
            name = f"synth_{i:05d}.png"
            (tmp / cls / name).write_bytes(encode_png(image))
            (tmp / MASKS_DIR / cls / name).write_bytes(encode_png(mask))
            if progress is not None:
                progress(i + 1, n)
        counts = {c: plan.count(c) for c in st.classes}
        meta = {"generator": "sperm_edge.data.synthetic", "style": st.name, "seed": seed, "n": n}
        atomic_write_json(tmp / META_FILE, {**meta, "classes": counts, "masks": MASKS_DIR})
    elapsed = time.perf_counter() - start
    log.debug("wrote %d %s crops to %s in %.1f s (%.0f/s)", n, st.name, out, elapsed, n / max(elapsed, 1e-9))
    return out
