"""A torch Dataset over decoded images: the shared preprocessing, with augmentation for training."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from sperm_edge.data.augment import AugmentConfig, augment
from sperm_edge.preprocess import PreprocessSpec, normalize, resize_rgb


class TensorImages(Dataset):
    """Images resized once by the spec's rule; `augment` adds a fresh random transform per access.

    The seed of each access derives from (`seed`, epoch, index), so an epoch is reproducible and a
    resumed run sees the same augmentations as an uninterrupted one.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        labels: list[int],
        spec: PreprocessSpec,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.resized = [resize_rgb(img, spec) for img in images]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.spec = spec
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.resized)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.resized[index]
        if self.augment_cfg is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image = augment(image, rng, self.augment_cfg)
        return torch.from_numpy(normalize(image[None], self.spec)[0]), self.labels[index]
