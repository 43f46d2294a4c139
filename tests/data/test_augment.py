"""The robust augmentation keeps a valid smear image; the field augmentation cuts the cell out and varies its stain."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sperm_edge.data.augment import FIELD, ROBUST, STANDARD, AugmentConfig, augment, augmentation, cut_out
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


def _crop_with_a_neighbour() -> np.ndarray:
    """A 120 px crop: a head with its tail at the centre, another head in a corner, on noisy pink glass."""
    import cv2

    rng = np.random.default_rng(0)
    image = np.full((120, 120, 3), (215, 195, 220), np.uint8)
    image = cv2.subtract(image, rng.integers(0, 8, image.shape, dtype=np.uint8))
    cv2.ellipse(image, (60, 60), (14, 9), 30, 0, 360, (110, 50, 140), -1)
    cv2.line(image, (70, 68), (110, 95), (170, 140, 185), 2)
    cv2.ellipse(image, (16, 16), (13, 9), 0, 0, 360, (110, 50, 140), -1)
    return image


def test_cut_out_keeps_the_centre_cell_and_drops_the_neighbour() -> None:
    image = _crop_with_a_neighbour()
    cell = cut_out(image)
    assert cell is not None and cell.shape == image.shape and cell.dtype == np.uint8
    glass = np.median(image[100:, :40].reshape(-1, 3), axis=0)
    assert np.abs(cell[10:22, 10:22].astype(float) - glass).max() < 12  # the corner head is gone: plain glass
    assert np.abs(cell[55:65, 55:65].astype(float) - image[55:65, 55:65]).max() < 12  # the centre head is kept
    assert cell[90:96, 100:106].mean() < glass.mean() - 5  # and its tail


def test_field_augmentation_uses_the_cut_out_and_varies_the_stain_amount() -> None:
    image = _crop_with_a_neighbour()
    cell = cut_out(image)
    still = AugmentConfig(rotate=False, flip=False, scale=0.0, translate=0.0, hue=0.0, saturation=0.0,
                          brightness=0.0, contrast=0.0, blur_p=0.0)  # fmt: skip
    always = replace(still, cutout_p=1.0)
    assert np.abs(augment(image, np.random.default_rng(0), always, cell).astype(int) - cell).max() <= 3
    assert np.abs(augment(image, np.random.default_rng(0), always).astype(int) - image).max() <= 3  # none given
    stained = [augment(image, np.random.default_rng(s), replace(still, density=0.4)) for s in range(8)]
    heads, glass = [d[55:65, 55:65].mean() for d in stained], [d[100:, :40].mean() for d in stained]
    assert np.ptp(heads) > 10 * max(np.ptp(glass), 0.5)  # paler and darker heads on the same glass
    assert augmentation("field") is FIELD and FIELD.cutout_p > 0 and FIELD.density > 0
