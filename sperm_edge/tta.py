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


def _lib(images: Batch):
    if isinstance(images, np.ndarray):
        return np
    import torch

    return torch


def dihedral_view(images: Batch, view: int) -> Batch:
    """[..., H, W] (H == W) in view `view` (0-7) of `dihedral_views`: rot90 by `view % 4`, then mirrored if >= 4."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"test-time rotation needs square images, got {tuple(images.shape[-2:])}")
    lib = _lib(images)
    turned = lib.rot90(images, view % 4, (-2, -1))
    return lib.flip(turned, (-1,)) if view % VIEWS >= 4 else turned


def undo_dihedral_view(maps: Batch, view: int) -> Batch:
    """Maps computed on `dihedral_view(x, view)` ([..., H, W], e.g. Grad-CAM) turned back onto `x`."""
    lib = _lib(maps)
    if view % VIEWS >= 4:
        maps = lib.flip(maps, (-1,))
    return lib.rot90(maps, -(view % 4), (-2, -1))


def dihedral_views(images: Batch) -> Batch:
    """[N, C, H, W] (H == W) -> [8 * N, C, H, W]: rot90 k = 0..3, each unflipped and mirrored, view-major."""
    return _lib(images).concatenate([dihedral_view(images, view) for view in range(VIEWS)])


def mean_over_views(logits: Batch) -> Batch:
    """[8 * N, K] (view-major, as `dihedral_views` lays it out) -> [N, K]."""
    return logits.reshape(VIEWS, -1, logits.shape[-1]).mean(0)
