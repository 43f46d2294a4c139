from __future__ import annotations

import json

import pytest
import torch

from sperm_edge.errors import SpermEdgeError
from sperm_edge.train.distill import distill_loss
from sperm_edge.train.run import train
from tests.train.test_trainer import _cfg


def test_the_distillation_loss_is_zero_at_the_teacher_and_pulls_the_student_towards_it() -> None:
    teacher = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 0.5]])
    assert distill_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(2, 3, requires_grad=True)
    loss = distill_loss(student, teacher)
    loss.backward()
    assert loss.item() > 0
    stepped = student.detach() - 1.0 * student.grad
    assert distill_loss(stepped, teacher).item() < loss.item()
    assert (stepped.argmax(1) == teacher.argmax(1)).all()


def test_kfold_distils_each_fold_from_the_teachers_same_fold(tiny_folder, tmp_path) -> None:
    train(_cfg(tiny_folder, tmp_path / "teacher", phase2_epochs=1), folds=2)
    cfg = _cfg(tiny_folder, tmp_path / "student", phase2_epochs=1, teacher=str(tmp_path / "teacher"), distill=0.5)
    summary = train(cfg, folds=2)
    assert summary["folds"] == 2
    for fold in (1, 2):
        meta = json.loads((tmp_path / "student" / f"fold-{fold}" / "best.json").read_text())
        assert meta["config"]["teacher"] == str(tmp_path / "teacher") and meta["config"]["distill"] == 0.5


def test_a_teacher_from_another_split_is_refused(tiny_folder, tmp_path) -> None:
    train(_cfg(tiny_folder, tmp_path / "teacher", phase2_epochs=1, seed=1))
    cfg = _cfg(tiny_folder, tmp_path / "student", teacher=str(tmp_path / "teacher"), distill=0.5)
    with pytest.raises(SpermEdgeError, match="another split .*leak held-out crops"):
        train(cfg)


def test_a_teacher_at_another_input_size_is_refused(tiny_folder, tmp_path) -> None:
    train(_cfg(tiny_folder, tmp_path / "teacher", phase2_epochs=1, img_size=40))
    cfg = _cfg(tiny_folder, tmp_path / "student", teacher=str(tmp_path / "teacher"), distill=0.5)
    with pytest.raises(SpermEdgeError, match="takes .*this run feeds"):
        train(cfg)


def test_distill_without_a_teacher_is_refused(tiny_folder, tmp_path) -> None:
    with pytest.raises(SpermEdgeError, match="needs a teacher"):
        train(_cfg(tiny_folder, tmp_path / "student", distill=0.5))
