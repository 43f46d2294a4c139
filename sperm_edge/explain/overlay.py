"""Heatmap overlays and the files an explanation leaves: `NAME.png` (crop beside its overlay) and `NAME.json`.

Torch-free, so the runtime can write engine explanations on a device without PyTorch: the
overlay is pytorch-grad-cam's `show_cam_on_image` recipe (JET colour map, blend, rescale to the
brightest pixel) in OpenCV, because importing `pytorch_grad_cam` imports torch. A test holds it
to the library's output.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sperm_edge.io import atomic_write_bytes, atomic_write_json

PANEL_SIDE = 224  # crops are shown at least this large


def overlay(rgb: np.ndarray, cam: np.ndarray, image_weight: float = 0.55) -> np.ndarray:
    """The heatmap (JET colours) blended over an RGB uint8 crop, as pytorch-grad-cam's `show_cam_on_image`."""
    heat = cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    blend = (1.0 - image_weight) * heat + image_weight * (rgb.astype(np.float32) / 255.0)
    return np.uint8(255 * (blend / np.max(blend)))


def panel(rgb: np.ndarray, cam: np.ndarray, caption: str = "") -> np.ndarray:
    """Crop and overlay side by side, enlarged to at least PANEL_SIDE px high, with a caption strip below."""
    h, w = rgb.shape[:2]
    scale = max(1.0, PANEL_SIDE / max(h, w))
    size = (round(w * scale), round(h * scale))
    left = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
    right = cv2.resize(overlay(rgb, cam), size, interpolation=cv2.INTER_CUBIC)
    gap = np.full((size[1], 4, 3), 255, np.uint8)
    image = np.hstack([left, gap, right])
    if caption:
        strip = np.full((22, image.shape[1], 3), 255, np.uint8)
        cv2.putText(strip, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        image = np.vstack([image, strip])
    return image


def encode_png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def write_explanation(out_dir: str | Path, name: str, rgb: np.ndarray, explanation, extra: dict | None = None) -> Path:
    """Write `name.png` (crop | overlay) and `name.json` (class, score, heat statistics) atomically; return the PNG."""
    out_dir = Path(out_dir)
    info = explanation.to_dict()
    caption = f"{info['class']} {info['score']:.2f}"
    if info["explained_class"] != info["class"]:
        caption += f" | heat for {info['explained_class']}"
    png = out_dir / f"{name}.png"
    atomic_write_bytes(png, encode_png(panel(rgb, explanation.cam, caption)))
    atomic_write_json(out_dir / f"{name}.json", {"id": name, **(extra or {}), **info, "image": png.name})
    return png
