"""How the training crops frame a head: its width and the crop's side in head widths, for the manifest.

The runtime cuts a square around each head found in a field; for the network to see what it was
trained on, that square must hold the head at the training crops' scale. At export time the
head of every training crop is found from its stain (`sperm_edge.data.real_fields.sprites.head_mask`:
density over the crop's own glass, thresholded at 20% of the head core's, tail opened away) and
its width taken as the square root of its area. The preprocessing pads a crop to a square of its
longer side, so `crop_scale`, the median of (longer side / head width), is the side of the runtime
crop in head widths. Written to `manifest.json` as ``framing``.
"""

from __future__ import annotations

import logging

import numpy as np

from sperm_edge.data.real_fields.sprites import head_mask
from sperm_edge.export.images import ImageSet

log = logging.getLogger(__name__)


def measure_framing(images: ImageSet) -> dict | None:
    """{head_width_px, crop_side_px, crop_scale, measured, of, source}, or None when no head was found."""
    widths, ratios, sides = [], [], []
    for image in images.images:
        mask = head_mask(image)
        if mask is None:
            continue
        width = float(np.sqrt(mask.sum()))
        side = float(max(image.shape[:2]))
        widths.append(width)
        sides.append(side)
        ratios.append(side / width)
    if not widths:
        log.warning("no head found in the training crops: the bundle records no framing")
        return None
    return {
        "head_width_px": round(float(np.median(widths)), 2),
        "crop_side_px": round(float(np.median(sides)), 1),
        "crop_scale": round(float(np.median(ratios)), 3),
        "measured": len(widths),
        "of": len(images),
        "source": images.source,
    }
