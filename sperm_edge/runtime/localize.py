"""Find stained sperm heads in a microscope field with classical OpenCV, and cut a square crop around each.

The method, for stained fixed smears (Diff-Quik, Papanicolaou, eosin-nigrosin...):

1. Flatten the illumination: estimate the empty-slide background per channel on a coarse grid
   (median, then a max filter that removes stained objects, then a blur) and turn each pixel into
   optical density, log(background / pixel) (Beer-Lambert), which is zero on empty glass whatever
   the lamp and the stain colour.
2. Threshold the stain density: automatically at a fraction of the dark-stained level (Otsu
   between lightly stained tails and clutter and darkly stained heads), never below a floor.
3. Open morphologically to cut off tails and midpieces (thin) from heads (thick), then take
   external contours.
4. Keep blobs by size (head area) and shape (solidity, elongation); skip heads that touch the frame
   edge (the next frames of a moving slide will show them whole); of two blobs on one head (split
   by a pale acrosome or a vacuole), keep the larger.
5. Crop a square centred on each head, of the side the model was trained on: `crop_scale` times
   the square root of the head area (HuSHeM crops are about 4.6 head-widths wide), or a fixed
   `crop_size`; pixels outside the frame are filled by replicating the border.

`--mode crop` does none of this: the whole frame is one centred cell, as in the data sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class LocalizerConfig:
    """Parameters of `find_cells`; areas and sizes in full-resolution frame pixels."""

    min_area: float = 60.0
    max_area: float = 4000.0
    min_solidity: float = 0.75
    max_elongation: float = 3.5  # major / minor axis of the fitted ellipse
    threshold: float | None = None  # optical density; None: automatic
    min_threshold: float = 0.15
    open_radius: int = 2  # at work resolution
    work_scale: float = 0.5  # detection runs on the frame resized by this factor
    edge_margin: int = 2  # heads closer than this to the frame edge are skipped
    crop_scale: float = 4.6
    crop_size: int | None = None


@dataclass
class Detection:
    """A head found in a frame: centre (x, y), head box and crop box as (x0, y0, x1, y1), area in px."""

    center: tuple[float, float]
    head_box: tuple[int, int, int, int]
    crop_box: tuple[int, int, int, int]
    area: float
    elongation: float
    density: float  # mean optical density of the head

    def to_dict(self) -> dict:
        return {
            "center": [round(self.center[0], 1), round(self.center[1], 1)],
            "head_box": list(self.head_box),
            "crop_box": list(self.crop_box),
            "area": round(self.area, 1),
        }


_LOG = np.log(np.arange(256, dtype=np.float32) + 1.0).astype(np.float32)


def _log_stain(rgb: np.ndarray) -> np.ndarray:
    """log intensity of the stain channels: red and green carry purple and blue-violet heads (green twice)."""
    red = cv2.LUT(rgb[..., 0], _LOG)
    green = cv2.LUT(rgb[..., 1], _LOG)
    return cv2.addWeighted(red, 1.0 / 3.0, green, 2.0 / 3.0, 0.0)


def stain_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density of the stain (float32, 0 on empty glass) of an RGB uint8 image."""
    h, w = rgb.shape[:2]
    grid = max(1, min(h, w) // 60)
    small = cv2.resize(rgb, (max(1, w // grid), max(1, h // grid)), interpolation=cv2.INTER_AREA)
    background = cv2.dilate(cv2.medianBlur(small, 5), np.ones((5, 5), np.uint8))
    log_bg = cv2.GaussianBlur(_log_stain(background), (0, 0), 2.0)
    log_bg = cv2.resize(log_bg, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.max(cv2.subtract(log_bg, _log_stain(rgb)), 0.0)


def auto_threshold(density: np.ndarray, floor: float) -> float:
    """Otsu between lightly and darkly stained pixels (those above `floor`), never below `floor`."""
    stained = density[density > floor]
    if stained.size < 50:
        return floor
    values = np.clip(stained / max(float(stained.max()), 1e-6) * 255.0, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return max(floor, float(otsu) / 255.0 * float(stained.max()) * 0.8)


def crop_side(area: float, cfg: LocalizerConfig) -> int:
    return int(cfg.crop_size or max(16, round(cfg.crop_scale * np.sqrt(area))))


def find_cells(rgb: np.ndarray, cfg: LocalizerConfig | None = None) -> list[Detection]:
    """Heads in an RGB uint8 field, in reading order (top to bottom, left to right)."""
    cfg = cfg or LocalizerConfig()
    h, w = rgb.shape[:2]
    s = cfg.work_scale
    work = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s != 1 else rgb
    density = stain_density(work)
    threshold = cfg.threshold if cfg.threshold is not None else auto_threshold(density, cfg.min_threshold)
    mask = (density > threshold).astype(np.uint8)
    if cfg.open_radius > 0:
        size = 2 * cfg.open_radius + 1
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    margin = cfg.edge_margin * s
    for contour in contours:
        area = cv2.contourArea(contour) / (s * s)
        if not cfg.min_area <= area <= cfg.max_area or len(contour) < 5:
            continue
        hull = cv2.contourArea(cv2.convexHull(contour)) / (s * s)
        if hull <= 0 or area / hull < cfg.min_solidity:
            continue
        (_cx, _cy), axes, _angle = cv2.fitEllipse(contour)
        elongation = max(axes) / max(min(axes), 1e-3)
        if elongation > cfg.max_elongation:
            continue
        x, y, bw, bh = cv2.boundingRect(contour)
        if x <= margin or y <= margin or x + bw >= work.shape[1] - margin or y + bh >= work.shape[0] - margin:
            continue
        m = cv2.moments(contour)
        cx, cy = m["m10"] / m["m00"] / s, m["m01"] / m["m00"] / s
        head = (int(x / s), int(y / s), int(np.ceil((x + bw) / s)), int(np.ceil((y + bh) / s)))
        side = crop_side(area, cfg)
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        blob = np.zeros((bh, bw), np.uint8)
        cv2.drawContours(blob, [contour - np.array([x, y])], -1, 1, -1)
        mean_density = float(density[y : y + bh, x : x + bw][blob > 0].mean()) if blob.any() else 0.0
        found.append(Detection((cx, cy), head, (x0, y0, x0 + side, y0 + side), area, elongation, mean_density))
    found = _drop_fragments(found)
    found.sort(key=lambda d: (round(d.center[1] / 32), d.center[0]))
    return found


def _drop_fragments(found: list[Detection], margin: float = 4.0) -> list[Detection]:
    """Drop the pieces of a head split in two by a pale acrosome or a vacuole: a blob whose centre lies on a
    larger blob's head box, or a small one (under 40% of its area) within 1.5 head-widths of its centre."""
    kept: list[Detection] = []
    for det in sorted(found, key=lambda d: -d.area):
        cx, cy = det.center
        fragment = False
        for k in kept:
            x0, y0, x1, y1 = k.head_box
            on_box = x0 - margin <= cx <= x1 + margin and y0 - margin <= cy <= y1 + margin
            near = det.area < 0.4 * k.area and np.hypot(cx - k.center[0], cy - k.center[1]) < 1.5 * np.sqrt(k.area)
            if on_box or near:
                fragment = True
                break
        if not fragment:
            kept.append(det)
    return kept


def crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of `box` (x0, y0, x1, y1), replicating the frame's border where the box leaves it."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    inner = rgb[cy0:cy1, cx0:cx1]
    if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1):
        return inner.copy()
    return cv2.copyMakeBorder(inner, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_REPLICATE)


def whole_frame(rgb: np.ndarray) -> Detection:
    """`--mode crop`: the frame is one centred cell."""
    h, w = rgb.shape[:2]
    box = (0, 0, w, h)
    return Detection((w / 2, h / 2), box, box, float(w * h), 1.0, 0.0)
