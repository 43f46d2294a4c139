"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a small model learns from a larger one's soft answers.

The deployed artefact stays one small model; the teacher (e.g. a CBAM-Lite1 run) only shapes its
training. Per step the student's loss is `(1 - distill) * cross-entropy + distill * T^2 *
KL(teacher || student)` at temperature T, both networks seeing the same (mixed, augmented) batch.

The teacher must have been trained on exactly this run's split: a teacher that saw the student's
validation or test crops would carry them into its soft targets, and the validation scores that
choose a recipe (and the test figures) would no longer be held out. `load_teacher` refuses any
other teacher. In k-fold training, fold k takes the teacher run's `fold-k`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sperm_edge.errors import SpermEdgeError
from sperm_edge.model.checkpoint import load_checkpoint
from sperm_edge.preprocess import PreprocessSpec

TEMPERATURE = 2.0  # Hinton et al.'s range is 1-20; 2 keeps most of the mass on the teacher's top classes


def teacher_path(teacher: str | Path, fold: int | None) -> Path:
    """The teacher checkpoint for this fold: `fold-N` of a k-fold run folder, else `teacher` itself."""
    teacher = Path(teacher)
    return teacher / f"fold-{fold}" if fold is not None and (teacher / f"fold-{fold}").is_dir() else teacher


def load_teacher(
    path: str | Path, spec: PreprocessSpec, classes: list[str], split: dict, device: torch.device
) -> nn.Module:
    """The teacher network in eval mode, after checking it fits this run: same input, classes and split."""
    ckpt = load_checkpoint(path)
    if ckpt.card.preprocess != spec:
        raise SpermEdgeError(f"teacher {path} takes {ckpt.card.preprocess}, this run feeds {spec}: train it alike")
    if ckpt.card.classes != classes:
        raise SpermEdgeError(f"teacher {path} has classes {ckpt.card.classes}, this run {classes}")
    recorded = ckpt.meta.get("split") or {}
    differs = [part for part in ("train", "val", "test") if sorted(recorded.get(part) or []) != sorted(split[part])]
    if differs or recorded.get("data") != split["data"]:
        what = ", ".join(differs) or "data folder"
        raise SpermEdgeError(
            f"teacher {path} was trained on another split ({what} differ): it would leak held-out crops into "
            "the soft targets; train the teacher with the same data, seed and folds"
        )
    model = ckpt.build_model().to(device).to(memory_format=torch.channels_last).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float = TEMPERATURE) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean (the T^2 keeps gradients on scale)."""
    return (
        F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                 reduction="batchmean", log_target=True) * t * t
    )  # fmt: skip
