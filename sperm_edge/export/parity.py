"""Validation of an exported ONNX model: structure, a smoke run, and parity with a reference on real images.

Kept apart from the converters: each check reads a file (or logits) and returns a named result or
raises a SpermEdgeError that says what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from sperm_edge.engines.ort import new_session
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.ort_cpu import ort_logits
from sperm_edge.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-3  # max |logit difference| allowed between PyTorch and ONNX Runtime in FP32
_RANKS = {"logits": 2, "cam": 4, "features": 2}  # the outputs' axes (cam: N x K x Hf x Wf)


@dataclass
class SmokeTest:
    """onnx.checker passed and ORT ran these batch sizes with the right output shape."""

    batch_sizes: list[int]
    num_classes: int
    outputs: list[str]

    def describe(self) -> dict:
        return asdict(self)


def check_onnx(path: str | Path, num_classes: int, img_size: int, batch_sizes: Sequence[int] = (1, 3)) -> SmokeTest:
    """onnx.checker (full check), then an ORT CPU session run at each batch size (proves the dynamic batch axis)."""
    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise SpermEdgeError(f"{path.name} fails onnx.checker: {err}") from err
    session = new_session(path)
    name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    if names[0] != "logits" or names[1:] not in ([], ["cam", "features"]):
        raise SpermEdgeError(f"{path.name} has outputs {names}; expected logits, cam, features (or logits only)")
    for batch in batch_sizes:
        x = np.random.default_rng(batch).standard_normal((batch, 3, img_size, img_size)).astype(np.float32)
        out = dict(zip(names, session.run(None, {name: x}), strict=True))
        lead = {"logits": (batch, num_classes), "cam": (batch, num_classes), "features": (batch,)}
        for key, value in out.items():
            if value.ndim != _RANKS[key] or value.shape[: len(lead[key])] != lead[key]:
                raise SpermEdgeError(
                    f"{path.name} returned {key} of shape {value.shape} for batch {batch}; "
                    f"expected {_RANKS[key]} axes starting {lead[key]}"
                )
            if not np.isfinite(value).all():
                raise SpermEdgeError(f"{path.name} returned non-finite {key} for batch {batch}")
    return SmokeTest(batch_sizes=list(batch_sizes), num_classes=num_classes, outputs=names)


@dataclass
class Agreement:
    """How closely `candidate` logits follow `reference` logits on the same images."""

    reference: str
    n: int
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    top1_agreement: float

    def describe(self) -> dict:
        return asdict(self)


def compare_logits(reference: np.ndarray, candidate: np.ndarray, reference_name: str) -> Agreement:
    if reference.shape != candidate.shape or reference.size == 0:
        raise SpermEdgeError(f"cannot compare logits of shapes {reference.shape} and {candidate.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return Agreement(
        reference=reference_name,
        n=int(reference.shape[0]),
        max_abs_logit_diff=float(diff.max()),
        mean_abs_logit_diff=float(diff.mean()),
        top1_agreement=float((reference.argmax(1) == candidate.argmax(1)).mean()),
    )


@dataclass
class Parity:
    """FP32 ONNX vs PyTorch on real images, and the tolerance it was held to."""

    agreement: Agreement
    tolerance: float
    images: str

    def describe(self) -> dict:
        return {**self.agreement.describe(), "tolerance": self.tolerance, "images": self.images}


def check_parity(
    torch_logits: np.ndarray,
    onnx_path: str | Path,
    images: Sequence[np.ndarray],
    spec: PreprocessSpec,
    tolerance: float = DEFAULT_TOLERANCE,
    images_source: str = "",
) -> Parity:
    """Run the ONNX model on `images` and hold its logits to PyTorch's within `tolerance`."""
    onnx_logits = ort_logits(new_session(onnx_path), images, spec)
    agreement = compare_logits(torch_logits, onnx_logits, "pytorch fp32")
    parity = Parity(agreement=agreement, tolerance=tolerance, images=images_source)
    log.info(
        "parity with PyTorch on %d images: max |logit diff| %.2e, top-1 agreement %.4f",
        agreement.n,
        agreement.max_abs_logit_diff,
        agreement.top1_agreement,
    )
    if not agreement.max_abs_logit_diff <= tolerance:  # also catches NaN
        raise SpermEdgeError(
            f"ONNX model disagrees with PyTorch: max |logit diff| {agreement.max_abs_logit_diff:.3g} > tolerance "
            f"{tolerance:g} on {agreement.n} images (top-1 agreement {agreement.top1_agreement:.4f})"
        )
    return parity
