"""Parity of an engine's `cam` output with pytorch-grad-cam on held-out crops: the explanation gate of export.

The crops are the validation images when INT8 is exported (its verdict ships or refuses a model,
and choices are made on validation data), else the logit-parity images.

The reference is `GradCAMPlusPlus(model, [model.attention])` of the PyTorch model, for the class
PyTorch predicts on each crop. An engine's map for that class goes through pytorch-grad-cam's
own post-processing (`sperm_edge.explain.maps.input_map`), then:

- FP32: the largest absolute difference from the reference, over all pixels of all crops, must
  be at most `FP32_TOLERANCE` (1e-4); a model that misses it refuses the bundle.
- the LayerCAM explainer (`explain.onnx`, FP32): every crop's Pearson r with pytorch-grad-cam's `LayerCAM`
  on the same block stage at least `EXPLAINER_MIN_PEARSON` (0.99); one that misses it is not shipped and
  the bundle keeps the Grad-CAM++ maps.
- INT8: the mean Pearson r of each crop's map with the reference must be at least
  `INT8_MIN_PEARSON` (0.95); a model that misses it is left out of the bundle, like one that
  fails its accuracy gate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.explain.maps import input_map, pearson
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
INT8_MIN_PEARSON = 0.95
EXPLAINER_MIN_PEARSON = 0.99


@dataclass
class CamReference:
    """pytorch-grad-cam's maps (N x S x S, normalised) of held-out crops, for the classes PyTorch predicts."""

    maps: np.ndarray
    targets: np.ndarray
    images: str
    library: str


@dataclass
class CamParity:
    """How one model's `cam` output follows the reference maps, and the verdict."""

    reference: str
    images: str
    n: int
    max_abs_diff: float
    mean_abs_diff: float
    pearson_mean: float
    pearson_min: float
    criterion: str
    passed: bool

    def describe(self) -> dict:
        return asdict(self)


def reference_maps(
    model, images: Sequence[np.ndarray], spec: PreprocessSpec, source: str, batch: int = 16, stage: int | None = None
) -> CamReference:
    """Maps through pytorch-grad-cam (the library the engine's closed forms must match): Grad-CAM++ of the
    attention output, or with `stage` LayerCAM of that block stage's output."""
    import pytorch_grad_cam
    import torch
    from pytorch_grad_cam import GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from sperm_edge.explain._feature_grad import FeatureGradModel

    model = model.cpu().eval()
    if stage is None:
        method, wrapped, layer, named = GradCAMPlusPlus, FeatureGradModel(model).eval(), model.attention, "attention"
    else:
        method, wrapped, layer = LayerCAM, model, model.backbone.blocks[stage]
        named = f"backbone.blocks[{stage}]"
    maps, targets = [], []
    with torch.inference_mode(False), torch.enable_grad(), method(wrapped, [layer]) as cam:
        for start in range(0, len(images), batch):
            x = torch.from_numpy(preprocess_batch(images[start : start + batch], spec))
            with torch.no_grad():
                predicted = model(x).argmax(1).tolist()
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in predicted]))
            cam.outputs = None  # drop the batch's autograd graph
            targets.extend(predicted)
    version = getattr(pytorch_grad_cam, "__version__", None) or _version("grad-cam")
    return CamReference(
        maps=np.concatenate(maps).astype(np.float32),
        targets=np.asarray(targets),
        images=source,
        library=f"pytorch-grad-cam {version} {method.__name__}(model, [model.{named}])",
    )


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def compare_cams(cam: np.ndarray, reference: CamReference, precision: str) -> CamParity:
    """Hold an engine's raw `cam` output (N x K x Hf x Wf) for the reference crops to the gate of `precision`."""
    if cam.ndim != 4 or cam.shape[0] != len(reference.targets):
        raise SpermEdgeError(f"cam output of shape {cam.shape} for {len(reference.targets)} reference crops")
    return compare_maps(cam[np.arange(len(cam)), reference.targets], reference, precision)


def compare_maps(grids: np.ndarray, reference: CamReference, precision: str) -> CamParity:
    """Hold raw maps of the reference crops' classes (N x Hf x Wf) to the gate of `precision`.

    `explainer` (the LayerCAM explainer, FP32): every crop's Pearson r at least `EXPLAINER_MIN_PEARSON`. Its
    maps pass ReLU masks deep in the network, so an engine's own rounding (batch norms folded into
    convolutions) flips the odd activation at a bound, moving a pixel by 1e-4 to 1e-3 on a few crops; the
    criterion asks that every map keep its shape.
    """
    if grids.ndim != 3 or grids.shape[0] != len(reference.targets):
        raise SpermEdgeError(f"maps of shape {grids.shape} for {len(reference.targets)} reference crops")
    size = reference.maps.shape[-1]
    mine = np.stack([input_map(grid, size) for grid in grids])
    diff = np.abs(mine - reference.maps)
    r = np.array([pearson(a, b) for a, b in zip(mine, reference.maps, strict=True)])
    if precision == "fp32":
        criterion = f"max_abs_diff <= {FP32_TOLERANCE:g}"
        passed = bool(diff.max() <= FP32_TOLERANCE)
    elif precision == "explainer":
        criterion = f"pearson_min >= {EXPLAINER_MIN_PEARSON:g}"
        passed = bool(r.min() >= EXPLAINER_MIN_PEARSON)
    else:
        criterion = f"pearson_mean >= {INT8_MIN_PEARSON:g}"
        passed = bool(r.mean() >= INT8_MIN_PEARSON)
    parity = CamParity(
        reference=reference.library,
        images=reference.images,
        n=int(len(mine)),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        pearson_mean=round(float(r.mean()), 6),
        pearson_min=round(float(r.min()), 6),
        criterion=criterion,
        passed=passed,
    )
    log.info(
        "%s maps vs pytorch-grad-cam on %d crops: max |diff| %.2e, Pearson r mean %.4f (min %.4f): %s",
        precision, parity.n, parity.max_abs_diff, parity.pearson_mean, parity.pearson_min,
        "pass" if passed else "FAIL",
    )  # fmt: skip
    return parity
