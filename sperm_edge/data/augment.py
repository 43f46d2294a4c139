"""Augmentations that suit stained smears, in numpy/OpenCV on the resized RGB uint8 image.

Any-angle rotation (a head has no preferred orientation on a slide), flips, small scale and
translation, stain colour jitter in HSV (stains vary between labs and batches) and mild defocus
blur. The border is replicated so rotation does not paint black corners onto the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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
    out = _jitter_colour(np.ascontiguousarray(out), rng, cfg)
    if rng.random() < cfg.blur_p:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.3, 1.0))
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
