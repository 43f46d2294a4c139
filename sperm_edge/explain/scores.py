"""How good are the heatmaps? Localisation against known head masks, and faithfulness to the model.

Localisation (synthetic crops, whose head masks are known):
- *heat in mask*: the share of the heatmap's energy that falls on the head (the "energy-based
  pointing game" of Score-CAM, Wang et al., CVPR-W 2020);
- *pointing game* (Zhang et al., ECCV 2016): a hit when the hottest pixel lies on the head, within
  a tolerance of 15 px at 224 px (scaled to the crop).
Both are compared with random heatmaps of the same smoothness (uniform noise on the model's
feature grid, upsampled), whose expected scores equal the head's share of the crop.

Faithfulness (any labelled crops; pytorch-grad-cam's CAM metrics): the change in the explained
class's probability when the image is (a) multiplied by its heatmap (`CamMultImageConfidenceChange`)
and (b) reduced to its 20% hottest pixels, the rest imputed (`ROADLeastRelevantFirst`, Rong et
al., ICML 2022); a faithful map loses less confidence than a random one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from scipy import stats

from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import IMAGE_SUFFIXES, natural_key
from sperm_edge.preprocess import decode_image

log = logging.getLogger(__name__)

MASKS_DIR = "_masks"
NO_HEAD_CLASSES = ("Non-Sperm",)


def heat_in_mask(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's total energy on the mask (0..1)."""
    total = float(cam.sum())
    return float(cam[mask > 0].sum()) / total if total > 0 else 0.0


def pointing_hit(cam: np.ndarray, mask: np.ndarray, tolerance: float | None = None) -> bool:
    """Whether the hottest pixel lies on the mask, within `tolerance` px (default 15 px per 224 px of crop)."""
    if tolerance is None:
        tolerance = 15.0 * max(mask.shape) / 224.0
    radius = max(0, int(round(tolerance)))
    region = mask > 0
    if radius:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        region = cv2.dilate(region.astype(np.uint8), kernel) > 0
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return bool(region[y, x])


def random_map(shape: tuple[int, int], rng: np.random.Generator, grid: int = 7) -> np.ndarray:
    """A random heatmap as smooth as a CAM: uniform noise on a grid x grid lattice, upsampled bilinearly."""
    coarse = rng.uniform(0.0, 1.0, (grid, grid)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def stain_head_mask(rgb: np.ndarray) -> np.ndarray:
    """The stained head of a head-centred crop (bool, the crop's shape), from the stain alone.

    Haematoxylin-type stains colour heads dark purple on a pink (HuSHeM) or grey (SMIDS) ground,
    and purple absorbs green most: the green channel, smoothed, thresholded by Otsu's method,
    separates stained matter from the ground. An opening with a disc of 4% of the crop side removes
    tails and debris thinner than a head; holes (pale acrosomes, vacuoles) are filled; of what is
    left, the component whose centroid is nearest the crop centre (the sets centre the head) is
    the head. Returns an empty mask when nothing stained is left.
    """
    h, w = rgb.shape[:2]
    green = cv2.GaussianBlur(rgb[..., 1], (0, 0), max(1.0, 0.01 * max(h, w)))
    _, stained = cv2.threshold(green, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    radius = max(1, round(0.04 * max(h, w)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    stained = cv2.morphologyEx(stained.astype(np.uint8), cv2.MORPH_OPEN, disc)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(stained)
    if count <= 1:
        return np.zeros((h, w), bool)
    distance = np.hypot(centroids[1:, 0] - w / 2, centroids[1:, 1] - h / 2)
    head = (labels == 1 + int(np.argmin(distance))).astype(np.uint8)
    contours, _ = cv2.findContours(head, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(head)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled > 0


def head_masks(images: list[np.ndarray], labels: list[int], classes: list[str]) -> list[np.ndarray | None]:
    """The stained head of each crop (`stain_head_mask`); None for a class without a head (SMIDS's `Non-Sperm`)
    or a crop where no stained head is found."""
    return [
        None if classes[label] in NO_HEAD_CLASSES else (m if (m := stain_head_mask(rgb)).any() else None)
        for rgb, label in zip(images, labels, strict=True)
    ]


def map_spread(cam: np.ndarray) -> float:
    """A heatmap's spread as the sigma of an isotropic Gaussian, a fraction of the crop's longer side (the width
    of the centre blob it is fairly compared with)."""
    h, w = cam.shape
    ys, xs = np.mgrid[0:h, 0:w]
    total = float(cam.sum()) or 1.0
    cy, cx = float((ys * cam).sum()) / total, float((xs * cam).sum()) / total
    variance = float((((ys - cy) ** 2 + (xs - cx) ** 2) * cam).sum()) / total / 2.0
    return float(np.sqrt(variance)) / max(h, w)


def localisation_scores(maps: list[np.ndarray], masks: list[np.ndarray | None]) -> dict | None:
    """Pointing game and heat share on the head of crop-sized heatmaps, beside a centred Gaussian as spread as
    the maps (what a head-centred set gives for free) and their ratio; None when no crop has a head mask."""
    pairs = [(m, mask) for m, mask in zip(maps, masks, strict=True) if mask is not None]
    if not pairs:
        return None
    sigma = float(np.mean([map_spread(m) for m, _ in pairs]))
    shares = [heat_in_mask(m, mask) for m, mask in pairs]
    centre = [heat_in_mask(centre_prior(mask.shape, sigma), mask) for _, mask in pairs]
    return {
        "pointing": mean_ci([float(pointing_hit(m, mask)) for m, mask in pairs]),
        "heat_share": mean_ci(shares),
        "heat_share_centre_matched": mean_ci(centre),
        "ratio": round(float(np.mean(shares)) / max(float(np.mean(centre)), 1e-9), 3),
        "spread": round(sigma, 4),
    }


TARGET_POINTING, TARGET_RATIO = 0.97, 1.5  # a map worth drawing: peak on the head, 1.5x a centred blob's heat there


def closeness(scores: dict) -> float:
    """How near `localisation_scores` are to both bars at once: their weaker share of them (1 or more: both met)."""
    return min(scores["pointing"]["mean"] / TARGET_POINTING, scores["ratio"] / TARGET_RATIO)


def heatmap_trust(section: dict) -> dict | None:
    """Which maps a bundle draws for explained cells and how far they can be trusted, from its manifest's `explain`
    section (measured at export on validation crops), with a sentence for reports and the live view (`verdict`:
    None when nothing was measured); None when the engine draws no maps."""
    if not section.get("engine"):
        return None
    drawn = section.get("explainer") if section.get("maps") == "explainer" else None
    method, layer = (drawn or section).get("method", "Grad-CAM++"), (drawn or section).get("layer", "")
    info = {"method": method, "layer": layer, "verdict": None}
    if section.get("pointing") is None:
        return info
    pointing, share = section["pointing"], section["heat_share"]
    matched = section.get("heat_share_centre_matched") or 0.0
    ratio = round(share / matched, 2) if matched else 0.0
    crops = ((section.get("quality") or {}).get("pointing") or {}).get("n")
    figures = (
        f"on {crops} validation crops the peak fell on the head for {100 * pointing:.0f}% and the head held "
        f"{ratio}x the heat of a centred blob as spread"
    )
    if pointing >= TARGET_POINTING and ratio >= TARGET_RATIO:
        verdict = f"{method} maps find the head: {figures}"
    elif pointing >= 0.9 and ratio >= 1.0:
        verdict = f"{method} maps mostly find the head ({figures}); look twice at a map off the head"
    else:
        verdict = f"{method} maps say little more than where the cell is ({figures}): read them as location, not reason"
    return {**info, "pointing": pointing, "heat_share": share, "heat_share_centre_matched": matched, "ratio": ratio,
            "crops": crops, "verdict": verdict}  # fmt: skip


def centre_prior(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A Gaussian at the crop centre, `sigma` a fraction of the crop's longer side (what a head-centred set rewards)."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    s = max(sigma * max(h, w), 0.5)  # a map with no spread (all zero) is compared with a one-pixel blob
    return np.exp(-(((xs - (w - 1) / 2) ** 2 + (ys - (h - 1) / 2) ** 2) / (2 * s * s))).astype(np.float32)


def list_crops(root: str | Path, limit: int | None = None) -> list[tuple[Path, str, Path | None]]:
    """(image, class, mask or None) for a class-folder set; masks from `_masks/<class>/<name>` when present.

    With `limit`, at most that many per class, spread over the class in file order.
    """
    root = Path(root)
    if not root.is_dir():
        raise SpermEdgeError(f"data folder not found: {root}")
    items = []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    for folder in classes:
        images = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
        if limit is not None and len(images) > limit:
            images = [images[i] for i in np.linspace(0, len(images) - 1, limit).round().astype(int)]
        for image in images:
            mask = root / MASKS_DIR / folder.name / image.name
            items.append((image, folder.name, mask if mask.is_file() else None))
    if not items:
        raise SpermEdgeError(f"no class folders with images in {root}")
    return items


def mean_ci(values: list[float]) -> dict:
    """Mean with a normal-approximation 95% interval (scipy's normal quantile and standard error), and n."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean, error = float(arr.mean()), float(stats.sem(arr)) if arr.size > 1 else 0.0
    low, high = stats.norm.interval(0.95, loc=mean, scale=error) if error > 0 else (mean, mean)
    return {"mean": round(mean, 4), "ci95": [round(float(low), 4), round(float(high), 4)], "n": int(arr.size)}


def score_explanations(
    checkpoint_stem: str | Path,
    data: str | Path,
    limit: int | None = 25,
    seed: int = 0,
    faithfulness: bool = True,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Localisation (where masks exist) and faithfulness scores of Grad-CAM++ on a class-folder set."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from sperm_edge.explain.gradcam import GradCamExplainer

    items = list_crops(data, limit)
    rng = np.random.default_rng(seed)
    acc: dict[str, list[float]] = {k: [] for k in (
        "heat_in_mask", "heat_in_mask_random", "pointing", "pointing_random", "mask_share",
        "cam_mult_change", "cam_mult_change_random", "road_keep20_change", "road_keep20_change_random", "latency_ms",
    )}  # fmt: skip
    correct = 0
    with GradCamExplainer(checkpoint_stem, threads=threads) as explainer:
        cam_mult, road = CamMultImageConfidenceChange(), ROADLeastRelevantFirst(percentile=80)
        for done, (path, cls, mask_path) in enumerate(items, start=1):
            rgb = decode_image(path)
            exp = explainer.explain(rgb)
            acc["latency_ms"].append(exp.latency_ms)
            correct += int(exp.classes[exp.predicted] == cls)
            grid = max(2, exp.input_cam.shape[0] // 32)
            if mask_path is not None:
                mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
                noise = random_map(mask.shape, rng, grid)
                acc["heat_in_mask"].append(heat_in_mask(exp.cam, mask))
                acc["heat_in_mask_random"].append(heat_in_mask(noise, mask))
                acc["pointing"].append(float(pointing_hit(exp.cam, mask)))
                acc["pointing_random"].append(float(pointing_hit(noise, mask)))
                acc["mask_share"].append(float(mask.mean()))
            if faithfulness:
                x = explainer.input_tensor(rgb)
                targets = [ClassifierOutputSoftmaxTarget(exp.target)]
                cams = exp.input_cam[None].astype(np.float32)
                noise = random_map(exp.input_cam.shape, rng, grid)[None]
                model = explainer.model
                acc["cam_mult_change"].append(float(cam_mult(x, cams, targets, model)[0]))
                acc["cam_mult_change_random"].append(float(cam_mult(x, noise, targets, model)[0]))
                acc["road_keep20_change"].append(float(road(x, cams, targets, model)[0]))
                acc["road_keep20_change_random"].append(float(road(x, noise, targets, model)[0]))
            if progress is not None:
                progress(done, len(items))
    result = {k: mean_ci(v) for k, v in acc.items()}
    result["crops"] = len(items)
    result["with_masks"] = len(acc["heat_in_mask"])
    result["accuracy"] = round(correct / len(items), 4)
    result["layer"] = explainer.layer
    return result
