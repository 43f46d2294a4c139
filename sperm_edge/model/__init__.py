"""Models by name: `create_model("cbam_efficientnet_lite0", num_classes=4, pretrained=True)`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from sperm_edge.model.registry import ModelEntry, get_entry, list_models
from sperm_edge.model.weights import LITE_WEIGHTS, lite_state_dict, load_safetensors_weights, load_timm_hub_weights

__all__ = ["ModelEntry", "create_model", "get_entry", "list_models"]


def create_model(name: str, num_classes: int, pretrained: bool = False, weights: str | Path | None = None) -> nn.Module:
    """Build a registered architecture; `pretrained` loads its ImageNet backbone, `weights` a local file."""
    entry = get_entry(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    model = entry.build(num_classes)
    if weights is not None:
        load_safetensors_weights(model, weights)
    elif pretrained and entry.pretrained in LITE_WEIGHTS:
        model.backbone.load_state_dict(lite_state_dict(model.backbone, LITE_WEIGHTS[entry.pretrained]))
    elif pretrained and entry.pretrained == "timm-hub":
        load_timm_hub_weights(model.backbone, model.backbone.default_cfg["architecture"])
    return model
