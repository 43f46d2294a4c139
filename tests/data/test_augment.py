"""The robust augmentation: stain, gamma, greyscale, noise and JPEG variation stays a valid smear image."""

from __future__ import annotations

from dataclasses import replace

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


def test_stain_scaling_keeps_the_glass_and_pales_or_darkens_the_cell() -> None:
    from sperm_edge.data.augment import _scale_stain

    glass = np.array([200.0, 190.0, 180.0], np.float32)
    image = np.tile(glass, (64, 64, 1))
    yy, xx = np.mgrid[:64, :64]
    cell = (yy - 32) ** 2 + (xx - 32) ** 2 < 12**2
    image[cell] *= np.float32(0.4)  # the cell lets 40% of the light through
    image = image.astype(np.uint8)
    assert np.array_equal(_scale_stain(image, 1.0), image)
    pale, dark = _scale_stain(image, 0.5), _scale_stain(image, 1.3)
    assert np.abs(pale[~cell].astype(int) - image[~cell]).max() <= 1  # the glass stays
    assert np.abs(dark[~cell].astype(int) - image[~cell]).max() <= 1
    assert pale[cell].mean() > image[cell].mean() > dark[cell].mean()
    np.testing.assert_allclose(pale[cell].astype(float) / image[~cell][0], np.sqrt(0.4), atol=0.02)  # OD halved
    rng = np.random.default_rng(0)
    views = [augment(image, rng, replace(STANDARD, stain_p=1.0)) for _ in range(4)]
    assert all(v.shape == image.shape and v.dtype == np.uint8 for v in views)
