"""The crop-agreement benchmark's variants of a real crop: each changes what its name says, and only that."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sperm_edge.data.real_fields import REAL_STYLES, make_sprite
from sperm_edge.preprocess import decode_image
from tests.benchmarks._scripts import load_script


def test_variants_of_a_real_smids_crop(smids: Path) -> None:
    bench = load_script("crop_agreement")
    path = sorted((smids / "Normal_Sperm").iterdir())[0]
    image = decode_image(path)
    sprite = make_sprite(image, "Normal_Sperm", path.name, False, REAL_STYLES["smids"].head_width)
    assert sprite is not None
    glass = sprite.background + np.float32(12.0)  # a brighter glass than the crop's own
    out = bench.variants(image, sprite, glass, np.random.default_rng(0))
    assert set(out) == set(bench.VARIANTS)
    assert all(v.shape == image.shape and v.dtype == np.uint8 for v in out.values())
    head = sprite.head.astype(bool)
    # Alone on its own glass, the head is the crop's head (the cell is pasted back where it was).
    inner = head & (sprite.alpha > 0.99)
    assert np.abs(out["alone"][inner].astype(int) - image[inner].astype(int)).mean() < 3
    # Away from the cell there is only glass: the crop's own colour, or the field's.
    empty = sprite.alpha < 1e-3
    assert np.abs(out["alone"][empty].astype(float) - sprite.background).max() <= 1
    assert np.abs(out["field_glass"][empty].astype(float) - glass).max() <= 1
    # The stain's range: a pale head lets more light through than the same head at 1, a dark one less.
    lum = {k: float(out[k][head].mean()) for k in ("pale", "field_glass", "dark")}
    assert lum["pale"] > lum["field_glass"] > lum["dark"]
    # The camera keeps the picture (slight defocus and noise) and a turned crop moves the head.
    assert np.abs(out["camera"].astype(float) - out["field_glass"].astype(float)).mean() < 6
    assert not np.array_equal(out["turned"], image)
