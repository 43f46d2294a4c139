"""Test-time augmentation over the dihedral group: a sperm head has no canonical orientation.

`dihedral_views` turns a batch of square NCHW images into the 8 rotations and mirror images of
each; `mean_over_views` folds the model's logits back by averaging them per image. Logits are
averaged (not probabilities) so that a temperature fitted on averaged logits applies unchanged.

Both take numpy arrays (the runtime, which has no torch) or torch tensors (training), with the
same view order, so a model scored with TTA in training sees exactly what the runtime gives it.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

VIEWS = 8

Batch = TypeVar("Batch")  # np.ndarray or torch.Tensor


def dihedral_views(images: Batch) -> Batch:
    """[N, C, H, W] (H == W) -> [8 * N, C, H, W]: rot90 k = 0..3, each unflipped and mirrored, view-major."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"test-time rotation needs square images, got {tuple(images.shape[-2:])}")
    if isinstance(images, np.ndarray):
        lib = np
    else:
        import torch as lib
    turned = [lib.rot90(images, k, (-2, -1)) for k in range(4)]
    return lib.concatenate(turned + [lib.flip(view, (-1,)) for view in turned])


def mean_over_views(logits: Batch) -> Batch:
    """[8 * N, K] (view-major, as `dihedral_views` lays it out) -> [N, K]."""
    return logits.reshape(VIEWS, -1, logits.shape[-1]).mean(0)
