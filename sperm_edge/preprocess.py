"""Image decoding and the one preprocessing used by training, export, runtime and benchmarks.

numpy and OpenCV only (no torch), so the classify-only runtime can import it. Training's
evaluation transform and the runtime call the same `preprocess_batch`, which is what makes their
inputs identical; the spec travels in the checkpoint and the bundle and is never retyped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.errors import SpermEdgeError

RESIZE_RULES = ("pad_square",)


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB uint8 image becomes the network input.

    `pad_square`: pad the shorter side with the image's own border (edge replication keeps the
    smear background) to a square, resize to `img_size` with area/linear interpolation, scale to
    [0, 1], subtract `mean`, divide by `std`, channels first.
    """

    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "pad_square"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise SpermEdgeError(f"unknown resize rule {self.resize!r}; known: {', '.join(RESIZE_RULES)}")
        if self.img_size < 16:
            raise SpermEdgeError(f"input size {self.img_size} is too small (at least 16)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        return cls(
            img_size=int(data["img_size"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            resize=str(data.get("resize", "pad_square")),
        )


def decode_image(path: str | Path) -> np.ndarray:
    """Read an image by its content (not its extension) as RGB uint8 HxWx3.

    Grey, 16-bit and alpha images are converted. Raises SpermEdgeError naming the file when it
    cannot be read or decoded.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # handles spaces and non-ASCII names
    except OSError as err:
        raise SpermEdgeError(f"cannot read image {path}: {err.strerror or err}") from err
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as err:
        if "MAX_IMAGE_PIXELS" in str(err):
            limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "OpenCV's limit")
            raise SpermEdgeError(f"image {path} has more pixels than the {limit} allowed") from None
        raise SpermEdgeError(f"cannot decode image {path}: {str(err).strip().splitlines()[-1]}") from None
    if image is None:
        raise SpermEdgeError(f"cannot decode image {path}: not an image or corrupt")
    return to_rgb8(image, source=str(path))


def to_rgb8(image: np.ndarray, source: str = "frame", bgr: bool = True) -> np.ndarray:
    """Convert grey, 16-bit, float or 4-channel arrays (OpenCV's BGR order by default) to RGB uint8."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SpermEdgeError(f"unsupported pixel type {image.dtype} in {source}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise SpermEdgeError(f"unsupported image shape {image.shape} in {source}")
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(image)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad an HxWxC image to a square by replicating its border, keeping it centred."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(image, top, side - h - top, left, side - w - left, cv2.BORDER_REPLICATE)


def resize_rgb(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Apply the spec's resize rule: RGB uint8 of any size -> RGB uint8 img_size x img_size."""
    square = pad_to_square(image)
    size = spec.img_size
    interp = cv2.INTER_AREA if square.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interp)


def normalize(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """N x S x S x 3 uint8 RGB (already resized) -> N x 3 x S x S float32, normalised."""
    mean = np.asarray(spec.mean, dtype=np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0)
    batch = (images.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def preprocess_batch(images: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """RGB uint8 images of any sizes -> the network's N x 3 x S x S float32 input."""
    if len(images) == 0:
        return np.zeros((0, 3, spec.img_size, spec.img_size), dtype=np.float32)
    return normalize(np.stack([resize_rgb(img, spec) for img in images]), spec)
