"""TensorImages makes each crop's cut-out once, when the augmentation uses them, and draws from it."""

from __future__ import annotations

import numpy as np

from sperm_edge.data.augment import FIELD, STANDARD, cut_out
from sperm_edge.preprocess import PreprocessSpec, resize_rgb
from sperm_edge.train.dataset import TensorImages
from tests.data.test_augment import _crop_with_a_neighbour

SPEC = PreprocessSpec(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_cut_outs_are_made_once_resized_and_only_for_the_field_augmentation() -> None:
    crop = _crop_with_a_neighbour()
    field = TensorImages([crop, crop], [0, 1], SPEC, FIELD, debris=[False, True])
    assert np.array_equal(field.cutouts[0], resize_rgb(cut_out(crop), SPEC))
    assert field.cutouts[1] is None  # as debris, a crop whose centre holds a head is not cut out: kept as it is
    assert all(c is None for c in TensorImages([crop], [0], SPEC, STANDARD).cutouts)
    seen = {tuple(np.round(field[0][0].numpy()[:, 4, 4], 2)) for field.epoch in range(12)}
    assert len(seen) > 1  # fresh transforms every epoch
