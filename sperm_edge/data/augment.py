"""Augmentations that suit stained smears, in numpy/OpenCV on the resized RGB uint8 image.

Any-angle rotation (a head has no preferred orientation on a slide), flips, small scale and
translation, stain colour jitter in HSV (stains vary between labs and batches) and mild defocus
blur. The border is replicated so rotation does not paint black corners onto the background.

`ROBUST` adds what differs between labs (for training a model that must hold up in another one):
colour-deconvolution stain jitter (scikit-image's `rgb2hed`/`hed2rgb`: each stain's amount scaled
and shifted, after Tellez et al. 2018), gamma, greyscale, sensor noise, JPEG compression and a wider
scale range for other magnifications.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from sperm_edge.errors import SpermEdgeError


@dataclass(frozen=True)
class AugmentConfig:
    rotate: bool = True
    flip: bool = True
    scale: float = 0.10  # +- relative zoom
    translate: float = 0.06  # +- fraction of the side
    hue: float = 8.0  # +- degrees of OpenCV's 0..180 hue
    saturation: float = 0.20  # +- relative
    brightness: float = 0.15  # +- relative
    contrast: float = 0.15  # +- relative
    blur_p: float = 0.25  # probability of a mild Gaussian blur
    hed_sigma: float = 0.0  # +- relative scale of each colour-deconvolution stain channel (0: off)
    hed_bias: float = 0.0  # +- shift of each stain channel's optical density
    gamma: float = 0.0  # +- relative gamma
    grey_p: float = 0.0  # probability of a greyscale copy
    noise_p: float = 0.0  # probability of Gaussian sensor noise
    noise_sigma: float = 6.0  # its standard deviation, in grey levels
    jpeg_p: float = 0.0  # probability of a JPEG round trip
    jpeg_quality: tuple[int, int] = (40, 90)
    alone_p: float = 0.0  # probability of the crop's cell alone on its glass (`TensorImages`, `sprites.cell_alone`)
    stain_p: float = 0.0  # probability of a stain-amount change (optical density over the glass scaled)
    stain_scale: tuple[float, float] = (0.5, 1.3)  # its factor's range: pale to dark staining


STANDARD = AugmentConfig()
ROBUST = AugmentConfig(scale=0.25, hed_sigma=0.2, hed_bias=0.03, gamma=0.3, grey_p=0.1, noise_p=0.3, jpeg_p=0.3)
AUGMENTATIONS = {"standard": STANDARD, "robust": ROBUST}
Augment = Enum("Augment", {name: name for name in AUGMENTATIONS}, type=str)  # the names, as a CLI choice


def augmentation(name: str) -> AugmentConfig:
    """The named augmentation set (`--augment`)."""
    if name not in AUGMENTATIONS:
        raise SpermEdgeError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def augment(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """A randomly transformed copy of a square RGB uint8 image (same size)."""
    size = image.shape[0]
    angle = rng.uniform(0.0, 360.0) if cfg.rotate else 0.0
    scale = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    matrix = cv2.getRotationMatrix2D((size / 2.0, size / 2.0), angle, scale)
    matrix[:, 2] += rng.uniform(-cfg.translate, cfg.translate, size=2) * size
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if cfg.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    if cfg.flip and rng.random() < 0.5:
        out = out[::-1]
    out = np.ascontiguousarray(out)
    if cfg.stain_p > 0 and rng.random() < cfg.stain_p:
        out = _scale_stain(out, float(rng.uniform(*cfg.stain_scale)))
    if cfg.hed_sigma > 0 or cfg.hed_bias > 0:
        out = _jitter_stains(out, rng, cfg)
    out = _jitter_colour(out, rng, cfg)
    if rng.random() < cfg.blur_p:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.3, 1.0))
    return _degrade(out, rng, cfg)


def _jitter_stains(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Scale and shift the haematoxylin, eosin and DAB channels of a colour deconvolution (scikit-image)."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(image)
    hed = hed * (1.0 + rng.uniform(-cfg.hed_sigma, cfg.hed_sigma, 3)) + rng.uniform(-cfg.hed_bias, cfg.hed_bias, 3)
    return np.clip(hed2rgb(hed) * 255.0, 0, 255).astype(np.uint8)


def _scale_stain(image: np.ndarray, factor: float) -> np.ndarray:
    """The cell stained `factor` times as much: its optical density over the glass scaled (Beer-Lambert).

    ``pixel = glass * (pixel / glass) ** factor``: the glass stays as it is, a pale cell (factor < 1)
    lets more light through and a dark one less, as slides stained for a shorter or longer time do.
    """
    from sperm_edge.localize import background_colour

    glass = background_colour(image)
    transmitted = np.maximum(image.astype(np.float32) / np.maximum(glass, 1.0), 1e-3)
    return np.clip(np.rint(glass * transmitted**factor), 0, 255).astype(np.uint8)


def _degrade(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Another camera: gamma, greyscale, sensor noise and JPEG compression, each with its probability."""
    out = image
    if cfg.gamma > 0:
        gamma = 1.0 + rng.uniform(-cfg.gamma, cfg.gamma)
        out = (255.0 * (out / 255.0) ** gamma).astype(np.uint8)
    if rng.random() < cfg.grey_p:
        out = np.repeat(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    if rng.random() < cfg.noise_p:
        out = np.clip(out + rng.normal(0.0, cfg.noise_sigma, out.shape), 0, 255).astype(np.uint8)
    if rng.random() < cfg.jpeg_p:
        quality = int(rng.integers(*cfg.jpeg_quality))
        ok, data = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    return out


def _jitter_colour(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue, cfg.hue)) % 180.0
    hsv[..., 1] *= 1.0 + rng.uniform(-cfg.saturation, cfg.saturation)
    rgb = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = rgb.mean()
    rgb = (rgb - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    rgb *= 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    return np.clip(rgb, 0, 255).astype(np.uint8)
