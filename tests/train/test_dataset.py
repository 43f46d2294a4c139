"""Training views: with `alone_p`, that share of them starts from the crop's cell alone on its glass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sperm_edge.data.augment import AugmentConfig
from sperm_edge.data.real_fields.sprites import cell_alone
from sperm_edge.preprocess import PreprocessSpec, decode_image, normalize, resize_rgb
from sperm_edge.train.dataset import TensorImages

STILL = AugmentConfig(rotate=False, flip=False, scale=0.0, translate=0.0, hue=0.0, saturation=0.0, brightness=0.0,
                      contrast=0.0, blur_p=0.0)  # fmt: skip


def _tensor(image: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    return torch.from_numpy(normalize(resize_rgb(image, spec)[None], spec)[0])


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


def test_alone_views_show_the_cell_without_its_surroundings(smids: Path) -> None:
    images = [decode_image(p) for p in sorted((smids / "Normal_Sperm").iterdir())[:6]]
    spec = PreprocessSpec(96, (0.5,) * 3, (0.25,) * 3)
    alone = [cell_alone(image) for image in images]
    assert all(a is not None and a.shape == i.shape for a, i in zip(alone, images, strict=True))
    always = TensorImages(images, [0] * 6, spec, AugmentConfig(**{**STILL.__dict__, "alone_p": 1.0}))
    never = TensorImages(images, [0] * 6, spec, STILL)
    for i in range(6):  # the still augmentation keeps only its colour round trip's rounding
        assert _gap(always[i][0], _tensor(alone[i], spec)) < 0.02 < _gap(always[i][0], _tensor(images[i], spec))
        assert _gap(never[i][0], _tensor(images[i], spec)) < 0.02 < _gap(never[i][0], _tensor(alone[i], spec))
    half = TensorImages(images, [0] * 6, spec, AugmentConfig(**{**STILL.__dict__, "alone_p": 0.5}))
    shown = [_gap(half[i][0], _tensor(alone[i], spec)) < 0.02 for half.epoch in range(8) for i in range(6)]
    assert 0.25 < np.mean(shown) < 0.75  # about half of the views, drawn afresh each epoch
