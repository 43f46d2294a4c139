"""Runtime fixtures: a tiny bundle, a short synthetic panning clip, synthetic fields, a numbered video."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.runtime._bundle import build_drift_bundle, build_tiny_bundle

CLIP_FRAMES = 24
CLIP_SIZE = (480, 360)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def drift_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny bundle with a drift model (fitted on generated crops), and those crops."""
    return build_drift_bundle(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> tuple[Path, dict]:
    """A short pan across a synthetic slide (mp4) and its ground truth."""
    from sperm_edge.data.synthetic import write_video

    path = tmp_path_factory.mktemp("clip") / "pan.mp4"
    write_video(path, frames=CLIP_FRAMES, seed=3, size=CLIP_SIZE, fps=15.0)
    return path, json.loads(path.with_suffix(".json").read_text())


def write_numbered_video(path: Path, frames: int = 20, size: tuple[int, int] = (64, 48)) -> Path:
    """An MJPG video whose frame i is a flat grey of level 10 * i + 5 (frame identity survives compression)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 10 * i + 5, np.uint8))
    writer.release()
    return path


def frame_number(rgb: np.ndarray) -> int:
    return int(round((float(rgb.mean()) - 5) / 10))


@pytest.fixture
def numbered_video(tmp_path: Path) -> Path:
    return write_numbered_video(tmp_path / "numbered.avi")
