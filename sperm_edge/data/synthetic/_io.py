"""Atomic, refuse-by-default writes for generated files and folders."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def _tmp_name(path: Path, suffix: str = "") -> Path:
    return path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}{suffix}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside ``path``, then rename over it."""
    tmp = _tmp_name(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON with two-space indent, written atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


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


@contextmanager
def atomic_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename.

    An existing ``out`` (allowed only with ``force``, or when empty) is moved aside first and
    deleted after the swap; on failure the temporary folder is deleted and ``out`` left as it was.
    """
    check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(out)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if out.exists() or out.is_symlink():
            old = _tmp_name(out, ".old")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
