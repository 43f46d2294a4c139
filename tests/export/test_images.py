"""Image sets for calibration and evaluation: folders, the checkpoint's split, skipped files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.images import folder_images, split_images
from tests.conftest import write_tiny_folder

CLASSES = ["alpha", "beta", "gamma"]


def test_flat_folder_is_fine_for_calibration_and_reports_corrupt_files(tmp_path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"cell {i}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    images = folder_images(tmp_path, CLASSES, need_labels=False)
    assert len(images) == 3 and images.labels is None
    assert [s["file"].endswith("bad.jpg") for s in images.skipped] == [True]
    with pytest.raises(SpermEdgeError, match="no class sub-folders"):
        folder_images(tmp_path, CLASSES, need_labels=True)


def test_class_folders_are_labelled_in_the_model_order(tmp_path) -> None:
    write_tiny_folder(tmp_path, classes=("gamma", "alpha"), per_class=2)
    images = folder_images(tmp_path, CLASSES, need_labels=True)
    assert sorted(set(images.labels)) == [0, 2]
    with pytest.raises(SpermEdgeError, match="does not know"):
        folder_images(tmp_path, ["alpha", "beta"], need_labels=False)


def test_split_images_follow_the_checkpoint_meta(tmp_path) -> None:
    write_tiny_folder(tmp_path / "data", per_class=2)
    meta = {"split": {"data": str(tmp_path / "data"), "test": ["alpha/img 0.png", "gamma/img 1.png", "zeta/x.png"]}}
    images = split_images(meta, "test", CLASSES)
    assert images.labels == [0, 2] and len(images.skipped) == 1
    with pytest.raises(SpermEdgeError, match="no train split"):
        split_images(meta, "train", CLASSES)
    meta["split"]["data"] = str(tmp_path / "moved")
    with pytest.raises(SpermEdgeError, match="not here"):
        split_images(meta, "test", CLASSES)


def test_sampling_is_reproducible_and_keeps_labels_aligned(tmp_path) -> None:
    write_tiny_folder(tmp_path, per_class=5)
    images = folder_images(tmp_path, CLASSES, need_labels=True)
    a, b = images.sample(6, seed=1), images.sample(6, seed=1)
    assert a.paths == b.paths and len(a) == 6
    assert all(CLASSES[label] == path.split("/")[0] for label, path in zip(a.labels, a.paths, strict=True))
    assert images.sample(100) is images
