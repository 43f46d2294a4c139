"""A torch Dataset over decoded images: the shared preprocessing, with augmentation for training."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from sperm_edge.data.augment import AugmentConfig, augment
from sperm_edge.data.real_fields.sprites import cell_alone
from sperm_edge.preprocess import PreprocessSpec, normalize, resize_rgb


class TensorImages(Dataset):
    """Images resized once by the spec's rule; `augment` adds a fresh random transform per access.

    The seed of each access derives from (`seed`, epoch, index), so an epoch is reproducible and a
    resumed run sees the same augmentations as an uninterrupted one. With `augment_cfg.alone_p`, that
    share of the accesses starts from the crop's cell alone on its glass (cut once, here).
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
        self.alone = None
        if augment_cfg is not None and augment_cfg.alone_p > 0:
            self.alone = [resize_rgb(cut if (cut := cell_alone(img)) is not None else img, spec) for img in images]
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
            if self.alone is not None and rng.random() < self.augment_cfg.alone_p:
                image = self.alone[index]
            image = augment(image, rng, self.augment_cfg)
        return torch.from_numpy(normalize(image[None], self.spec)[0]), self.labels[index]
