"""The runtime feeds the network exactly what training's evaluation path fed it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sperm_edge.bundle import load_bundle
from sperm_edge.localize import crop, find_cells
from sperm_edge.preprocess import decode_image, preprocess_batch
from sperm_edge.train.dataset import TensorImages


def test_runtime_and_training_preprocessing_are_identical(tiny_bundle: Path, fields: list[Path]) -> None:
    spec = load_bundle(tiny_bundle).card.preprocess
    frame = decode_image(fields[0])
    crops = [crop(frame, d.crop_box) for d in find_cells(frame)][:4]
    crops.append(frame[:131, :97].copy())  # a non-square crop, like SMIDS
    runtime = preprocess_batch(crops, spec)
    training = TensorImages(crops, [0] * len(crops), spec)  # evaluation: no augmentation
    expected = torch.stack([training[i][0] for i in range(len(crops))]).numpy()
    assert runtime.dtype == np.float32 and runtime.shape == expected.shape
    np.testing.assert_array_equal(runtime, expected)
