"""Training configuration: dataclasses saved into every checkpoint (training, and few-shot adaptation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum


class Keep(str, Enum):
    """Which weights a run keeps: its best validation epoch, or its final ones."""

    best = "best"
    last = "last"


class Balance(str, Enum):
    """How unequal class sizes are evened out: weighted loss, weighted sampling, or not at all."""

    loss = "loss"
    sampler = "sampler"
    none = "none"


class EvalSplit(str, Enum):
    """What `evaluate` scores: a split of the run's own data, or every image of another set."""

    test = "test"
    val = "val"
    train = "train"
    all = "all"


@dataclass
class TrainConfig:
    data: str
    arch: str = "cbam_efficientnet_lite0"
    out: str = "runs/latest"
    phase1_epochs: int | None = None  # None: the data set preset's default
    phase2_epochs: int | None = None
    phase1_lr: float = 3e-3
    phase2_lr: float = 1e-4
    warmup_epochs: int = 2
    weight_decay: float = 1e-4
    batch_size: int = 16
    workers: int = 0  # DataLoader processes augmenting training batches; 0: the training process itself
    img_size: int | None = None  # None: the preset's size
    seed: int = 0
    pretrained: bool = True
    weights: str | None = None
    balance: str = "loss"  # loss | sampler | none
    mixup: float = 0.0  # Beta(alpha, alpha) MixUp; 0 disables
    label_smoothing: float = 0.0
    augment: str = "standard"  # standard | robust (stain, optics and camera variation: see data.augment)
    alone: float = 0.0  # share of training views showing the crop's cell alone on its glass (see TensorImages)
    stain: float = 0.0  # share of training views with the stain amount changed (see data.augment)
    patience: int = 8  # epochs without a better validation macro-F1 before a phase stops early
    ema_decay: float = 0.0  # per-step exponential moving average of the weights; 0 disables
    keep: str = "best"  # best: the epoch with the best validation macro-F1; last: the final weights
    teacher: str | None = None  # run folder of a model trained on the same split, to distil from (see train.distill)
    distill: float = 0.0  # weight of the distillation term (0: plain cross-entropy; needs `teacher`)
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class AdaptConfig:
    """The fixed schedule of `sperm-edge adapt` (chosen beforehand, never on the new lab's test crops)."""

    per_class: int
    seed: int = 0
    views: int = 8  # augmented copies of every shot whose backbone features are cached
    steps: int = 150  # AdamW steps on the cached features
    lr: float = 1e-3
    weight_decay: float = 1e-3
    # The backbone's last block stages (with its final conv) trained too; 0: backbone frozen. None: 1 where the
    # backbone has block stages, else 0 (chosen on a set-apart share of SMIDS by `benchmarks/crosslab.py --select`).
    stages: int | None = None
    backbone_lr: float = 1e-4  # their rate
    batch_size: int = 64  # shots' views a step; 0: all of them (full batch)
