"""The trainer's library-backed pieces (torch's schedulers, timm's MixUp, scikit-learn's class weights) equal the
hand-written code they replaced, kept here as references and run on the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sperm_edge.errors import SpermEdgeError
from sperm_edge.train.trainer import Phase, class_weights, lr_schedule


def reference_lr(phase: Phase, step: int, steps_per_epoch: int) -> float:
    """The former schedule: linear warm-up over `phase.warmup` epochs, then cosine decay to 1% of the rate."""
    total = max(phase.epochs * steps_per_epoch, 1)
    warm = min(phase.warmup * steps_per_epoch, total - 1)
    if step < warm:
        return phase.lr * (step + 1) / warm
    progress = (step - warm) / max(total - warm, 1)
    return phase.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def reference_class_weights(labels: list[int], num_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return len(labels) / (num_classes * np.maximum(counts, 1.0))


def reference_mixup_loss(
    logits: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor, criterion: nn.Module
) -> torch.Tensor:
    """The former MixUp loss: the mixture of two hard-target cross-entropies."""
    return lam * criterion(logits, targets) + (1 - lam) * criterion(logits, targets[perm])


@pytest.mark.parametrize(
    ("epochs", "warmup", "steps"), [(5, 0, 7), (40, 2, 14), (12, 2, 34), (3, 1, 1), (2, 5, 3), (1, 1, 1), (4, 2, 2)]
)
def test_schedule_equals_the_former_closed_form(epochs: int, warmup: int, steps: int) -> None:
    phase = Phase(2, epochs, 5e-4, warmup, freeze_backbone=False)
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=phase.lr)
    scheduler = lr_schedule(optimizer, phase, steps)
    for step in range(epochs * steps):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(reference_lr(phase, step, steps), rel=1e-9), step
        optimizer.step()
        scheduler.step()


def test_class_weights_equal_the_former_ones_and_a_missing_class_is_named() -> None:
    rng = np.random.default_rng(0)
    for k in (2, 3, 4, 18):
        labels = [*range(k), *rng.integers(0, k, 200).tolist()]
        names = [f"c{i}" for i in range(k)]
        np.testing.assert_allclose(class_weights(labels, names), reference_class_weights(labels, k))
    with pytest.raises(SpermEdgeError, match="no image of b"):
        class_weights([0, 0, 2], ["a", "b", "c"])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_timm_mixup_loss_equals_the_former_mixture(weighted: bool, smoothing: float) -> None:
    from timm.data import Mixup

    k, n = 4, 16
    gen = torch.Generator().manual_seed(1)
    images, targets = torch.randn(n, 3, 8, 8, generator=gen), torch.randint(0, k, (n,), generator=gen)
    weights = torch.rand(k, generator=gen) + 0.5 if weighted else None
    head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, k))

    np.random.seed(7)
    mixed, soft = Mixup(mixup_alpha=0.2, cutmix_alpha=0.0, label_smoothing=smoothing, num_classes=k)(
        images.clone(), targets
    )
    new = nn.CrossEntropyLoss(weight=weights)(head(mixed), soft)

    np.random.seed(7)  # timm draws whether to mix, then lambda, from numpy's global generator; it pairs i with n-1-i
    assert np.random.rand() < 1.0
    lam = float(np.random.beta(0.2, 0.2))
    perm = torch.arange(n - 1, -1, -1)
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images[perm])
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=smoothing)
    old = reference_mixup_loss(head(mixed), targets, lam, perm, criterion)
    # Soft targets average over the batch; hard weighted targets divide by the sum of the targets' weights.
    scale = 1.0 if weights is None else float(weights[targets].mean())
    torch.testing.assert_close(new, old * scale)
