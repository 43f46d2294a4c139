"""Accuracy of a reduced-precision model against FP32 on a labelled held-out set, and the drop gate.

The gate compares accuracy in percentage points: a model that loses more than `max_drop` points
is not shipped (unless the user accepts it). Given the model's top-1 agreement with FP32 on more
images than the validation split (export adds the calibration images), it also asks for agreement
of at least 1 - 2 * max_drop / 100 (0.98 at the default limit): on a small validation split one image
is several points (HuSHeM's 26: 3.8 each), and a HuSHeM model that matched FP32's validation accuracy
agreed with it on 94% of the training images and was 7 points down on the test split. Twice the limit,
because a disagreement need not cost accuracy: at 1 - max_drop / 100 the search refused SMIDS fold 1's
models that agreed on 98.9% and lost 0.6 points on its 450 validation images (set on validation and
training images; test figures were not looked at). Figures come from `sperm_edge.metrics`, the same
code that training and the benchmarks report with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.parity import compare_logits
from sperm_edge.metrics import classification_report, softmax

DEFAULT_MAX_DROP = 1.0  # accuracy points


@dataclass
class Score:
    """Accuracy figures of one precision on the held-out set, and its agreement with FP32."""

    precision: str
    n: int
    accuracy: float
    macro_f1: float
    top1_agreement_fp32: float | None = None
    max_abs_logit_diff_fp32: float | None = None

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "precision"}


def score(
    precision: str,
    logits: np.ndarray,
    labels: Sequence[int],
    classes: Sequence[str],
    fp32_logits: np.ndarray | None = None,
) -> Score:
    """Accuracy and macro-F1 of `logits` against `labels`; with `fp32_logits`, agreement with FP32 too."""
    if len(labels) != len(logits):
        raise SpermEdgeError(f"{len(logits)} predictions for {len(labels)} labels")
    report = classification_report(labels, softmax(logits), classes)
    result = Score(precision=precision, n=report["n"], accuracy=report["accuracy"], macro_f1=report["macro_f1"])
    if fp32_logits is not None:
        agreement = compare_logits(fp32_logits, logits, "onnx fp32")
        result.top1_agreement_fp32 = agreement.top1_agreement
        result.max_abs_logit_diff_fp32 = agreement.max_abs_logit_diff
    return result


@dataclass
class DropGate:
    """The verdict on one reduced-precision model."""

    precision: str
    fp32_accuracy: float
    accuracy: float
    drop_points: float
    max_drop_points: float
    passed: bool
    allowed: bool  # shipped although it failed, because the user said --allow-drop
    agreement: float | None = None  # top-1 agreement with FP32 on validation and calibration images
    min_agreement: float | None = None

    @property
    def message(self) -> str:
        verdict = "within" if self.drop_points <= self.max_drop_points else "exceeds"
        text = (
            f"{self.precision} accuracy {self.accuracy:.4f} vs fp32 {self.fp32_accuracy:.4f}: drop "
            f"{self.drop_points:.2f} points {verdict} the limit of {self.max_drop_points:g}"
        )
        if self.agreement is not None:
            low = self.agreement < self.min_agreement
            text += f"; top-1 agreement {self.agreement:.4f} {'below' if low else 'meets'} {self.min_agreement:.2f}"
        return text

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_drop(
    precision: str,
    fp32_accuracy: float,
    accuracy: float,
    max_drop: float = DEFAULT_MAX_DROP,
    allow: bool = False,
    agreement: float | None = None,
) -> DropGate:
    """Pass when accuracy falls by at most `max_drop` points (a gain always passes) and, when `agreement` is
    given, the model agrees with FP32 on at least 1 - 2 * max_drop / 100 of the images."""
    if max_drop < 0:
        raise SpermEdgeError(f"--max-drop must be 0 or more points, not {max_drop}")
    drop = round((fp32_accuracy - accuracy) * 100.0, 6)
    min_agreement = None if agreement is None else round(1.0 - 2.0 * max_drop / 100.0, 6)
    passed = drop <= max_drop and (agreement is None or agreement >= min_agreement)
    return DropGate(
        precision=precision,
        fp32_accuracy=fp32_accuracy,
        accuracy=accuracy,
        drop_points=drop,
        max_drop_points=max_drop,
        passed=passed,
        allowed=not passed and allow,
        agreement=agreement,
        min_agreement=min_agreement,
    )
