"""The robust augmentation: stain, gamma, greyscale, noise and JPEG variation stays a valid smear image."""

from __future__ import annotations

import numpy as np
import pytest

from sperm_edge.data.augment import ROBUST, STANDARD, augment, augmentation
from sperm_edge.errors import SpermEdgeError
from tests.conftest import write_tiny_folder


def test_robust_augmentation_varies_the_stain_and_keeps_the_image_valid(tmp_path) -> None:
    import cv2

    folder = write_tiny_folder(tmp_path / "d", per_class=1, size=64)
    image = cv2.cvtColor(cv2.imread(str(next(folder.rglob("*.png")))), cv2.COLOR_BGR2RGB)
    outs = [augment(image, np.random.default_rng(seed), ROBUST) for seed in range(12)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    means = np.array([o.reshape(-1, 3).mean(axis=0) for o in outs])
    plain = np.array(
        [augment(image, np.random.default_rng(s), STANDARD).reshape(-1, 3).mean(axis=0) for s in range(12)]
    )
    assert means.std(axis=0).mean() > plain.std(axis=0).mean()  # more colour variation than the standard set
    again = augment(image, np.random.default_rng(3), ROBUST)
    assert np.array_equal(again, outs[3])  # reproducible from the seed


def test_unknown_augmentation_is_refused() -> None:
    assert augmentation("robust") is ROBUST
    with pytest.raises(SpermEdgeError, match="unknown augmentation 'wild'"):
        augmentation("wild")
