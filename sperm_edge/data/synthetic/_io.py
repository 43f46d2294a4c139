"""Atomic, refuse-by-default writes for generated files and folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sperm_edge.errors import SpermEdgeError


def check_target(path: Path, force: bool) -> None:
    """Refuse to replace an existing file or non-empty folder unless ``force``."""
    if not force and path.exists() and (path.is_file() or any(path.iterdir())):
        kind = "file" if path.is_file() else "folder"
        raise SpermEdgeError(f"output {kind} {path} already exists; use --force (force=True) to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise SpermEdgeError(f"cannot write {path}: {path.parent} is not a folder")


def check_output_file(out: Path, suffix: str, what: str, force: bool) -> Path:
    """Validate a file output that carries its ground truth beside it; return the ``.json`` path."""
    if out.is_dir():
        raise SpermEdgeError(f"{what} output {out} is a folder; give a file name ending in {suffix}")
    if out.suffix.lower() != suffix:
        raise SpermEdgeError(f"{what} output must be a {suffix} file, got {out}")
    truth = out.with_suffix(".json")
    check_target(out, force)
    check_target(truth, force)
    return truth


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB (h, w, 3) or grey/bool (h, w) image."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 PNG
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
