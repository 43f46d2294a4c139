"""How the training crops frame a head, measured by the runtime's own localiser, for the manifest.

The runtime cuts a square around each head found in a field, of side ``crop_scale`` times the
field's head width as its localiser (`sperm_edge.localize.find_cells`) measures it (the square root
of the head region's area). For the network to see heads at the training crops' scale, the
training heads must be measured by that same localiser. They were measured by another
definition (the real-field bench's stain mask, `data.real_fields.sprites.head_mask`, 20% of the
head core's density at full resolution), which finds heads 3% (HuSHeM) to 5% (SMIDS) wider than
the localiser does, over every class (SMIDS' `Non-Sperm` crops included): the crop scales came
out 4.64 and 5.14 where the localiser's measure of the same training splits gives 4.83 and 5.56,
so field crops were 4% and 8% tighter than the training crops.

So each training crop is laid on a canvas of its own glass colour, three crops wide (the
localiser estimates the glass from around the objects, as it does in a field), and the
localiser's detection on the crop's centre is its head. The preprocessing pads a crop to a
square of its longer side, so ``crop_scale``, the median of (longer side / head width), is the
side of the runtime crop in head widths. Written to `manifest.json` as ``framing``.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from sperm_edge.data.presets import NON_SPERM
from sperm_edge.export.images import ImageSet
from sperm_edge.localize import Detection, LocalizerConfig, background_colour, crop, find_cells, isolate

log = logging.getLogger(__name__)

METHOD = "runtime localiser on each crop laid on its own glass"


def _centre_head(rgb: np.ndarray, cfg: LocalizerConfig | None) -> tuple[np.ndarray, Detection | None, list]:
    """The crop laid on its glass (three times its size), the localiser's head at its centre (or None), and every
    detection on that canvas."""
    h, w = rgb.shape[:2]
    pad = max(h, w)
    glass = [float(v) for v in background_colour(rgb)]
    canvas = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=glass)
    cx, cy = pad + w / 2.0, pad + h / 2.0
    found = find_cells(canvas, cfg)
    on_centre = [d for d in found if _holds(d.head_box, cx, cy)]
    best = min(on_centre, key=lambda d: np.hypot(d.center[0] - cx, d.center[1] - cy)) if on_centre else None
    return canvas, best, found


def head_in_crop(rgb: np.ndarray, cfg: LocalizerConfig | None = None) -> Detection | None:
    """The localiser's head at the centre of a head-centred crop, or None when it finds none there.

    The crop is padded with its glass colour to three times its size; of the detections whose head box
    holds the crop's centre, the nearest to it.
    """
    return _centre_head(rgb, cfg)[1]


def field_cut(rgb: np.ndarray, cfg: LocalizerConfig) -> np.ndarray | None:
    """The crop field mode cuts around the head at the centre of a head-centred crop (laid on its glass as
    `head_in_crop` lays it): the localiser's crop box at `cfg`'s crop scale, other heads painted out when
    `cfg.isolate`. None when the localiser finds no head at the centre."""
    canvas, head, found = _centre_head(rgb, cfg)
    if head is None:
        return None
    patch = crop(canvas, head.crop_box)
    return isolate(patch, head, found) if cfg.isolate else patch


def _holds(box: tuple[int, int, int, int], x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def measure_framing(
    images: ImageSet, classes: list[str] | None = None, cfg: LocalizerConfig | None = None
) -> dict | None:
    """{head_width_px, crop_side_px, crop_scale, measured, of, method, source}; None when no head was found.

    With labels and `classes`, crops of a class that is not sperm (SMIDS' `Non-Sperm`) are left out: they hold
    no head to frame.
    """
    heads, sides = [], []
    labels = images.labels if images.labels is not None and classes else [None] * len(images)
    sperm = [im for im, k in zip(images.images, labels, strict=True) if k is None or not NON_SPERM.search(classes[k])]
    for image in sperm:
        head = head_in_crop(image, cfg)
        if head is not None:
            heads.append(head)
            sides.append(float(max(image.shape[:2])))
    if not heads:
        log.warning("no head found in the training crops: the bundle records no framing")
        return None
    widths = np.sqrt([d.area for d in heads])
    log.info("framing: a head found by the localiser in %d of %d training crops of sperm", len(heads), len(sperm))
    return {
        "head_width_px": round(float(np.median(widths)), 2),
        "crop_side_px": round(float(np.median(sides)), 1),
        "crop_scale": round(float(np.median(np.array(sides) / widths)), 3),
        "measured": len(heads),
        "of": len(sperm),
        "method": METHOD,
        "source": images.source,
    }
