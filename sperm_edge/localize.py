"""Find stained sperm heads in a microscope field with classical OpenCV, and cut a square crop around each.

The method, for stained fixed smears (Diff-Quik, Papanicolaou, eosin-nigrosin...), everything
measured on the field itself (no stain colour or level is assumed):

1. Flatten the illumination: estimate the empty-slide background per channel on a coarse grid
   (median, then a max filter that removes stained objects, then a blur) and turn each pixel into
   per-channel optical density, log(background / pixel) (Beer-Lambert), zero on empty glass
   whatever the lamp.
2. Stain colour from the field: the direction of the mean density of its most stained pixels (a
   one-stain colour deconvolution, Ruifrok & Johnston 2001); each pixel's density is its
   projection on that direction, so pale heads of any hue stand out of the glass alike.
3. Threshold from the field's own glass: `noise_k` times the robust spread (MAD) of the density
   of the lower half of the pixels (the glass), never below `min_threshold`. Low enough to keep a
   pale acrosome: the box is the whole head, not its darkest core.
4. Open morphologically to cut tails and midpieces (thin) off the heads (thick), with a disk of
   half the blob's own half-width (at most `open_radius`), so heads of any magnification survive;
   fill holes (vacuoles).
5. Split touching heads: inside each blob, the distance transform's cores (above `split_level`
   of the blob's peak) that are separate seed a watershed (Beucher & Lantuejoul 1979; OpenCV's
   `watershed`) on the inverted distance map. Heads that overlap make a blob too convex for that:
   one about twice the frame's median head area whose outline has two deep notches (convexity
   defects) is cut along the line between them, the classical concavity-point split of touching
   nuclei and chromosomes.
6. Keep regions by size (head area), shape (solidity, elongation) and thickness (the distance
   transform's peak: tails and thin fragments have none); skip heads that touch the frame edge (the
   next frames of a moving slide will show them whole); of two regions on one head, keep the larger.
7. Crop a square centred on each head, of the side the model was trained on: `crop_scale` head
   widths (the bundle's measured framing, `export.framing`; 4.6 by default), the head width being
   the median of the frame's heads (the square root of their area), so every cell of a field is cut
   at one scale, as the training crops were; or a fixed `crop_size`. Pixels outside the frame are
   filled by replicating the border. Other heads reaching into a crop are painted out with the
   crop's glass (`isolate`), so that the network sees one head, as in its training crops.

`--mode crop` does none of this: the whole frame is one centred cell, as in the data sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_CROP_SCALE = 4.6
DARK_BORDER = 40  # a pixel whose channels are all below this is a scan border, not glass or stain


@dataclass
class LocalizerConfig:
    """Parameters of `find_cells`; areas and sizes in full-resolution frame pixels."""

    min_area: float = 60.0
    max_area: float = 16000.0  # a real smear's head at x100 with its acrosome is 4,000-6,000 px
    min_solidity: float = 0.75
    max_elongation: float = 3.6  # major / minor axis of the fitted ellipse
    min_thickness: float = 4.0  # peak of the distance transform (half the head's width), px
    threshold: float | None = None  # optical density; None: from the field's glass
    min_threshold: float = 0.05
    noise_k: float = 6.0
    head_level: float = 0.2  # a head's core is its blob's pixels above this share of the blob's peak density
    # The head's box is its core grown into the pale pixels around it (an acrosome) above this share of the core's
    # peak density, no further than `grow_reach` of the core's half-width; on real smear fields the core's box
    # missed the pale acrosome (median IoU with the true head 0.64; grown 0.8+, `benchmarks/real_smears.py`).
    grow_level: float = 0.08
    grow_reach: float = 0.7
    # Specks: objects thinner than `speck_width` of the frame's head width, or fainter than `speck_density` of its
    # heads' density (both from the heads, weighted by stain mass: specks outnumber heads but weigh little).
    speck_width: float = 0.5
    speck_density: float = 0.15
    seed_factor: float = 3.0  # a blob whose peak is under this many thresholds is not a head
    open_radius: int = 3  # largest opening radius that cuts tails off heads, at work resolution
    open_fraction: float = 0.5  # ... as a share of the blob's half-width
    split_level: float = 0.5
    split_solidity: float = 0.8  # blobs less convex than this are tried as touching heads
    # An overlapping pair (convex enough to pass as one head): `pair_area` times the frame's median head area,
    # with two notches in its outline at least `pair_notch` and `pair_second_notch` head widths deep. Chosen on
    # the real-crop clips of the validation seeds 0-2 (benchmarks/README.md): from 1.8 areas no single sperm head
    # was cut; above 3.2 only debris was.
    pair_area: tuple[float, float] = (1.8, 3.2)
    pair_notch: float = 0.18
    pair_second_notch: float = 0.10
    work_scale: float = 0.5  # detection runs on the frame resized by this factor
    edge_margin: int = 2  # heads closer than this to the frame edge are skipped
    crop_scale: float = DEFAULT_CROP_SCALE
    crop_size: int | None = None
    isolate: bool = True  # paint the other heads out of each crop (`isolate`)

    @classmethod
    def framed(
        cls,
        framing: Mapping | None,
        crop_scale: float | None = None,
        crop_size: int | None = None,
        isolate: bool = True,
    ) -> LocalizerConfig:
        """The crop framing a bundle recorded (`manifest["framing"]`), unless `crop_scale`/`crop_size` override it."""
        scale = crop_scale or (framing or {}).get("crop_scale") or DEFAULT_CROP_SCALE
        return cls(crop_scale=float(scale), crop_size=crop_size, isolate=isolate)


@dataclass
class Detection:
    """A head found in a frame: centre (x, y), head box and crop box as (x0, y0, x1, y1), area in px."""

    center: tuple[float, float]
    head_box: tuple[int, int, int, int]
    crop_box: tuple[int, int, int, int]
    area: float
    elongation: float
    density: float  # mean optical density of the head
    outline: np.ndarray | None = None  # the head region's contour, (n, 1, 2) int32 frame pixels
    cut: bool = False  # one of an overlapping pair cut apart (`_unpair`)

    def to_dict(self) -> dict:
        return {
            "center": [round(self.center[0], 1), round(self.center[1], 1)],
            "head_box": list(self.head_box),
            "crop_box": list(self.crop_box),
            "area": round(self.area, 1),
        }


_LOG = np.log(np.arange(256, dtype=np.float32) + 1.0).astype(np.float32)
_DISKS: dict[int, np.ndarray] = {}


def _disk(radius: int) -> np.ndarray:
    if radius not in _DISKS:
        _DISKS[radius] = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return _DISKS[radius]


def _log_background(rgb: np.ndarray) -> np.ndarray:
    """log of the empty slide's light per channel, on a coarse grid (float32 (gh, gw, 3)): stained objects removed."""
    h, w = rgb.shape[:2]
    grid = max(1, min(h, w) // 60)
    small = cv2.resize(rgb, (max(1, w // grid), max(1, h // grid)), interpolation=cv2.INTER_AREA)
    background = cv2.dilate(cv2.medianBlur(small, 5), np.ones((5, 5), np.uint8))
    return cv2.GaussianBlur(cv2.LUT(background, _LOG), (0, 0), 2.0)


def stain_vector(od: np.ndarray) -> np.ndarray:
    """Unit colour of the stain (3,): the mean per-channel density of the most stained 2% of `od` (n, 3)."""
    total = od.sum(axis=1)
    stained = od[total >= max(float(np.percentile(total, 98)), 0.3)]
    vector = np.maximum(stained.mean(axis=0), 0.0) if len(stained) >= 20 else np.ones(3, np.float32)
    return (vector / max(float(np.linalg.norm(vector)), 1e-6)).astype(np.float32)


def stain_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density of the field's stain (float32 (h, w), 0 on empty glass): per-channel density projected on
    the stain's colour, estimated from the field's most stained pixels (on every 4th pixel)."""
    h, w = rgb.shape[:2]
    log_bg = _log_background(rgb)
    log_pix = cv2.LUT(rgb, _LOG)
    sample = log_pix[::4, ::4]
    od = cv2.resize(log_bg, (sample.shape[1], sample.shape[0]), interpolation=cv2.INTER_LINEAR) - sample
    vector = stain_vector(od.reshape(-1, 3)).reshape(1, 3)
    background = cv2.resize(cv2.transform(log_bg, vector), (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.max(cv2.subtract(background, cv2.transform(log_pix, vector)), 0.0)


def field_threshold(density: np.ndarray, cfg: LocalizerConfig) -> float:
    """The glass's level plus `noise_k` robust standard deviations (MAD of the lower three quarters of the
    pixels: the glass, whatever the stain covers), at least `min_threshold`."""
    sample = density[::3, ::3].ravel()
    glass = sample[sample <= np.percentile(sample, 75)]
    if not glass.size:
        return cfg.min_threshold
    centre = float(np.median(glass))
    spread = 1.4826 * float(np.median(np.abs(glass - centre)))
    return max(cfg.min_threshold, centre + cfg.noise_k * spread)


def crop_side(width: float, cfg: LocalizerConfig) -> int:
    """Side of the crop for a field whose heads are `width` px wide (sqrt of area)."""
    return int(cfg.crop_size or max(16, round(cfg.crop_scale * width)))


@dataclass
class _Shape:
    contour: np.ndarray
    solidity: float
    elongation: float


def _shape(blob: np.ndarray) -> _Shape | None:
    """Outline, solidity (area / convex hull area) and elongation (fitted ellipse's axes) of a blob."""
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    hull = cv2.contourArea(cv2.convexHull(contour))
    solidity = cv2.contourArea(contour) / hull if hull > 0 else 0.0
    elongation = 1.0
    if len(contour) >= 5:
        axes = cv2.fitEllipse(contour)[1]
        elongation = max(axes) / max(min(axes), 1e-3)
    return _Shape(contour, solidity, elongation)


def _split(blob: np.ndarray, cfg: LocalizerConfig) -> list[np.ndarray]:
    """Touching heads in one blob (uint8 mask) apart (the blob itself when it holds one head).

    Seeds: the distance transform's local maxima (within 0.8 of the peak's radius) above `split_level` of
    the peak; a watershed on the inverted distance map grows each seed into a head.
    """
    dist = cv2.distanceTransform(blob, cv2.DIST_L2, 3)
    peak = float(dist.max())
    radius = max(2, int(0.8 * peak))
    maxima = (dist >= cv2.dilate(dist, _disk(radius))) & (dist >= cfg.split_level * peak)
    n, seeds = cv2.connectedComponents(maxima.astype(np.uint8))
    if n <= 2:
        return [blob]
    markers = seeds.astype(np.int32)
    markers[blob == 0] = n  # the background is one more basin
    relief = cv2.normalize(-dist, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    cv2.watershed(cv2.merge([relief] * 3), markers)
    return [(markers == k).astype(np.uint8) for k in range(1, n)]


def _fill(mask: np.ndarray) -> list[np.ndarray]:
    """Each external blob of `mask` with its holes filled (vacuoles, a pale centre)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        blob = np.zeros_like(mask)
        cv2.drawContours(blob, [contour], -1, 1, -1)
        out.append(blob)
    return out


def _blobs(density: np.ndarray, threshold: float, cfg: LocalizerConfig) -> list[tuple[np.ndarray, int, int, int]]:
    """(blob mask, x, y, opening radius) at work resolution: each stained component (density above the
    field's `threshold`) thresholded again at `head_level` of its own peak (a pale head keeps its acrosome, a
    dark one does not swell with its halo), opened (tails off), holes filled."""
    low = (density > threshold).astype(np.uint8)
    contours, _ = cv2.findContours(low, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pad = cfg.open_radius + 1
    h, w = density.shape
    out = []
    for contour in contours:
        if cv2.contourArea(contour) < cfg.min_area * cfg.work_scale**2:
            continue
        x, y, bw, bh = cv2.boundingRect(contour)
        x0, y0, x1, y1 = max(x - pad, 0), max(y - pad, 0), min(x + bw + pad, w), min(y + bh + pad, h)
        sub = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.drawContours(sub, [contour - np.array([x0, y0])], -1, 1, -1)
        sub = sub > 0
        patch = density[y0:y1, x0:x1]
        peak = float(patch[sub].max())
        if peak < cfg.seed_factor * threshold:
            continue  # faint all over: a tail, a smear of stain, the glass's texture
        mask = (sub & (patch > max(threshold, cfg.head_level * peak))).astype(np.uint8)
        radius = _open_radius(mask, cfg)
        if radius > 0:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(radius))
        out.extend((blob, x0, y0, radius) for blob in _fill(mask))
    return out


def _open_radius(mask: np.ndarray, cfg: LocalizerConfig) -> int:
    """Radius of the opening that cuts the tail off this blob: `open_fraction` of its thickest part's half-width
    (the head's), at most `open_radius`, so small heads (low magnification) survive what cuts tails off large ones."""
    half_width = float(cv2.distanceTransform(mask, cv2.DIST_L2, 3).max())
    return int(min(cfg.open_radius, max(1, round(cfg.open_fraction * half_width))))


def _candidates(
    density: np.ndarray, threshold: float, cfg: LocalizerConfig
) -> list[tuple[np.ndarray, int, int, _Shape]]:
    """(region mask, x, y, shape) of each head candidate at work resolution: the blobs, touching heads split.

    A blob that is not convex (`split_solidity`) or too elongated to be a head still carries a midpiece,
    or is heads touching: it is opened harder, and what is still not convex is split.
    """
    out = []
    for blob, x0, y0, radius in _blobs(density, threshold, cfg):
        shape = _shape(blob)
        if shape is None:
            continue
        if shape.solidity >= cfg.split_solidity and shape.elongation <= cfg.max_elongation:
            out.append((blob, x0, y0, shape))
            continue
        opened = cv2.morphologyEx(blob, cv2.MORPH_OPEN, _disk(radius + 1))
        for part in _fill(opened):
            part_shape = _shape(part)
            if part_shape is None:
                continue
            pieces = [part] if part_shape.solidity >= cfg.split_solidity else _split(part, cfg)
            for piece in pieces:
                piece_shape = part_shape if piece is part else _shape(piece)
                if piece_shape is not None:
                    out.append((piece, x0, y0, piece_shape))
    return out


# What the runtime's pipeline calls to find the cells of a frame (`find_cells` unless a caller, such as a
# benchmark comparing two localisers of this repository, passes another): RGB frame and settings in, heads out.
CellFinder = Callable[[np.ndarray, LocalizerConfig], list[Detection]]


def find_cells(rgb: np.ndarray, cfg: LocalizerConfig | None = None) -> list[Detection]:
    """Heads in an RGB uint8 field, in reading order (top to bottom, left to right)."""
    cfg = cfg or LocalizerConfig()
    h, w = rgb.shape[:2]
    s = cfg.work_scale
    work = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s != 1 else rgb
    density = stain_density(work)
    threshold = cfg.threshold if cfg.threshold is not None else field_threshold(density, cfg)
    found: list[Detection] = []
    regions: dict[int, tuple[np.ndarray, int, int, _Shape]] = {}  # id(detection) -> its candidate region
    for candidate in _candidates(density, threshold, cfg):
        det = _detection(*candidate, density, cfg)
        if det is not None:
            found.append(det)
            regions[id(det)] = candidate
    found = _drop_fragments(found)
    if found:
        width, level = head_scale(found)
        found = [
            d for d in found if np.sqrt(d.area) >= cfg.speck_width * width and d.density >= cfg.speck_density * level
        ]
        width = float(np.median([np.sqrt(d.area) for d in found]))
        found = [piece for det in found for piece in _unpair(det, regions[id(det)], width, density, cfg)]
        side = crop_side(float(np.median([np.sqrt(d.area) for d in found])), cfg)
        for det in found:
            x0, y0 = int(round(det.center[0] - side / 2)), int(round(det.center[1] - side / 2))
            det.crop_box = (x0, y0, x0 + side, y0 + side)
    found.sort(key=lambda d: (round(d.center[1] / 32), d.center[0]))
    return found


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def head_scale(found: list[Detection]) -> tuple[float, float]:
    """The frame's head width (sqrt of area, px) and head density: medians over its objects weighted by stain
    mass (area x density). Specks outnumber the heads of a real smear many times but weigh little."""
    widths = np.sqrt([d.area for d in found])
    densities = np.array([d.density for d in found])
    mass = widths**2 * np.maximum(densities, 1e-6)
    return _weighted_median(widths, mass), _weighted_median(densities, mass)


def _detection(
    region: np.ndarray, ox: int, oy: int, shape: _Shape, density: np.ndarray, cfg: LocalizerConfig
) -> Detection | None:
    """The head a candidate region (work resolution, offset `ox`, `oy`) is, or None when its size, shape or
    thickness is not a head's or it touches the frame's edge."""
    s = cfg.work_scale
    contour = shape.contour
    area = float(region.sum()) / (s * s)
    if not cfg.min_area <= area <= cfg.max_area or len(contour) < 5:
        return None
    if shape.solidity < cfg.min_solidity or shape.elongation > cfg.max_elongation:
        return None
    if float(cv2.distanceTransform(region, cv2.DIST_L2, 3).max()) / s < cfg.min_thickness:
        return None
    x, y, bw, bh = cv2.boundingRect(contour)
    x, y = x + ox, y + oy
    margin = cfg.edge_margin * s
    if x <= margin or y <= margin or x + bw >= density.shape[1] - margin or y + bh >= density.shape[0] - margin:
        return None
    m = cv2.moments(region, binaryImage=True)
    cx, cy = (m["m10"] / m["m00"] + ox) / s, (m["m01"] / m["m00"] + oy) / s
    mean_density = float(density[oy : oy + region.shape[0], ox : ox + region.shape[1]][region > 0].mean())
    contour = _grown(region, ox, oy, density, cfg) + np.array([ox, oy])
    x, y, bw, bh = cv2.boundingRect(contour)
    head = (int(x / s), int(y / s), int(np.ceil((x + bw) / s)), int(np.ceil((y + bh) / s)))
    outline = np.round(contour / s).astype(np.int32)
    return Detection((cx, cy), head, head, area, shape.elongation, mean_density, outline)


def _grown(region: np.ndarray, ox: int, oy: int, density: np.ndarray, cfg: LocalizerConfig) -> np.ndarray:
    """The outline (work resolution, relative to `ox`, `oy`) of a head's core grown into the pale stain around it
    (`grow_level` of the core's peak density, within `grow_reach` of its half-width), opened so that a tail or
    midpiece (thin) does not come with it."""
    half_width = float(cv2.distanceTransform(region, cv2.DIST_L2, 3).max())
    reach = max(1, int(round(cfg.grow_reach * half_width)))
    h, w = density.shape
    x0, y0 = max(ox - reach, 0), max(oy - reach, 0)
    x1, y1 = min(ox + region.shape[1] + reach, w), min(oy + region.shape[0] + reach, h)
    core = np.zeros((y1 - y0, x1 - x0), np.uint8)
    core[oy - y0 : oy - y0 + region.shape[0], ox - x0 : ox - x0 + region.shape[1]] = region
    patch = density[y0:y1, x0:x1]
    pale = (patch > cfg.grow_level * float(patch[core > 0].max())).astype(np.uint8)
    grown = pale & cv2.dilate(core, _disk(reach))
    grown = cv2.morphologyEx(grown, cv2.MORPH_OPEN, _disk(max(1, int(round(0.3 * half_width))))) | core
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cx, cy = np.argwhere(core)[0][::-1]
    own = next((c for c in contours if cv2.pointPolygonTest(c, (float(cx), float(cy)), False) >= 0), None)
    return (own if own is not None else max(contours, key=cv2.contourArea)) + np.array([x0 - ox, y0 - oy])


def _notches(contour: np.ndarray) -> list[tuple[float, tuple[int, int]]]:
    """The concavities of an outline, deepest first: (depth in px, deepest point)."""
    try:
        defects = cv2.convexityDefects(contour, cv2.convexHull(contour, returnPoints=False))
    except cv2.error:  # an outline that crosses itself
        return []
    if defects is None:
        return []
    rows = sorted(defects.reshape(-1, 4).tolist(), key=lambda r: -r[3])
    return [(depth / 256.0, tuple(contour[far, 0].tolist())) for _, _, far, depth in rows]


def _unpair(
    det: Detection, candidate: tuple[np.ndarray, int, int, _Shape], width: float, density: np.ndarray,
    cfg: LocalizerConfig,
) -> list[Detection]:  # fmt: skip
    """`det` as the two heads it is when it is an overlapping pair (see `LocalizerConfig.pair_area`), cut along
    the line between its outline's two deepest notches; else `det` alone. `width`: the frame's median head width.

    Both pieces must be heads (`_detection`) of at least half the median head area, or the cut is undone."""
    low, high = cfg.pair_area
    if not low * width**2 <= det.area <= high * width**2:
        return [det]  # most heads: no outline defects to compute
    region, ox, oy, shape = candidate
    s = cfg.work_scale
    notches = _notches(shape.contour)
    if len(notches) < 2:
        return [det]
    (first, a), (second, b) = notches[:2]
    if first < cfg.pair_notch * width * s or second < cfg.pair_second_notch * width * s:
        return [det]
    cut = region.copy()
    cv2.line(cut, a, b, 0, 2)
    pieces = [piece for piece in _fill(cut) if piece.sum() >= 0.5 * (width * s) ** 2]
    heads = [_detection(piece, ox, oy, piece_shape, density, cfg) for piece in pieces
             if (piece_shape := _shape(piece)) is not None]  # fmt: skip
    if len(heads) != 2 or None in heads:
        return [det]
    for head in heads:
        head.cut = True
    return heads


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


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """RGB of the glass: per channel, the median of the brighter half of the valid pixels."""
    grey = rgb.mean(axis=2)
    valid = rgb.max(axis=2) >= DARK_BORDER
    bright = valid & (grey >= np.median(grey[valid]))
    return np.median(rgb[bright].reshape(-1, 3), axis=0).astype(np.float32)


def isolate(patch: np.ndarray, det: Detection, others: list[Detection], margin: int = 4) -> np.ndarray:
    """The crop `patch` (cut at `det.crop_box`) with the other heads that reach into it painted out with glass.

    A training crop shows one head at its centre; a crop cut from a crowded field also shows its
    neighbours' heads, and the network answers for them too (issue 11: on real-cell fields, crops with a
    neighbour agreed with the cell's own crop 70% of the time, alone 88%). Each other head's outline,
    grown by `margin` px and feathered, is blended into the crop's glass colour (`background_colour`);
    the cell's own head, grown alike, is never painted over.
    """
    x0, y0 = det.crop_box[:2]
    near = [o for o in others if o is not det and o.outline is not None and _meets(o.head_box, det.crop_box, margin)]
    if not near:
        return patch
    h, w = patch.shape[:2]
    paint = np.zeros((h, w), np.uint8)
    cv2.drawContours(paint, [o.outline - np.array([x0, y0]) for o in near], -1, 1, -1)
    bx, by, bw, bh = cv2.boundingRect(paint)
    if bw == 0:
        return patch
    pad = 3 * margin  # room for the growth and the feathering
    bx0, by0, bx1, by1 = max(bx - pad, 0), max(by - pad, 0), min(bx + bw + pad, w), min(by + bh + pad, h)
    grow = _disk(margin)
    region = cv2.dilate(paint[by0:by1, bx0:bx1], grow)
    if det.outline is not None:
        own = np.zeros_like(region)
        cv2.drawContours(own, [det.outline - np.array([x0 + bx0, y0 + by0])], -1, 1, -1)
        region[cv2.dilate(own, grow) > 0] = 0
    alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), max(1.0, margin / 2))[..., None]
    glass = background_colour(patch[::3, ::3])  # a sparse sample of the crop is enough for a median
    out = patch.copy()
    window = out[by0:by1, bx0:bx1].astype(np.float32)
    out[by0:by1, bx0:bx1] = (window + (glass - window) * alpha).astype(np.uint8)
    return out


def _meets(box: tuple[int, int, int, int], other: tuple[int, int, int, int], margin: int) -> bool:
    return (
        box[0] - margin < other[2]
        and other[0] < box[2] + margin
        and box[1] - margin < other[3]
        and other[1] < box[3] + margin
    )


def whole_frame(rgb: np.ndarray) -> Detection:
    """`--mode crop`: the frame is one centred cell."""
    h, w = rgb.shape[:2]
    box = (0, 0, w, h)
    return Detection((w / 2, h / 2), box, box, float(w * h), 1.0, 0.0)
