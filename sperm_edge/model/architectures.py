"""The classifiers: a timm EfficientNet feature extractor with an optional CBAM, and a small CNN baseline.

Every model exposes `backbone` (frozen in phase 1 of training), `attention` (CBAM or identity)
and `head`; Grad-CAM++ targets `attention` (the refined final feature map).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from sperm_edge.model.cbam import CBAM


class AttentionClassifier(nn.Module):
    """backbone feature map -> CBAM (optional) -> global average pool -> dropout -> linear."""

    def __init__(self, timm_name: str, num_classes: int, use_cbam: bool, dropout: float = 0.3) -> None:
        super().__init__()
        self.backbone = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="")
        channels = self.backbone.num_features
        self.attention: nn.Module = CBAM(channels) if use_cbam else nn.Identity()
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(channels, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.backbone(x)))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SimpleCNN(nn.Module):
    """The paper's from-scratch baseline: four conv-BN-ReLU-pool blocks and a linear head.

    It has no pretrained backbone, so its `backbone` is trained in both phases (nothing to freeze
    is treated by the trainer as "train everything").
    """

    def __init__(self, num_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            _conv_block(3, 32), _conv_block(32, 64), _conv_block(64, 128), _conv_block(128, 256)
        )
        self.attention = nn.Identity()
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(256, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.backbone(x)))


def freeze_batchnorm_statistics(module: nn.Module) -> None:
    """BatchNorm layers of `module` in eval mode: their running statistics stay as trained (affine weights learn)."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def has_block_stages(backbone: nn.Module) -> bool:
    """Whether `backbone` is a timm EfficientNet (stem, block stages, final 1x1 conv) that `split_backbone` splits."""
    return isinstance(getattr(backbone, "blocks", None), nn.Sequential) and hasattr(backbone, "conv_head")


def split_backbone(backbone: nn.Module, stages: int) -> tuple[nn.Module, nn.Module]:
    """A timm EfficientNet backbone as (front, tail), `tail(front(x)) == backbone(x)`.

    The tail is the last `stages` block stages and the final 1x1 conv with its BatchNorm; both parts hold
    the backbone's own modules, not copies. With `stages` 0 the front is the whole backbone and the tail empty.
    """
    if stages == 0:
        return backbone, nn.Sequential()
    if not has_block_stages(backbone):
        raise ValueError(f"{type(backbone).__name__} is not an EfficientNet backbone: it has no block stages to split")
    blocks = backbone.blocks
    if not 0 < stages <= len(blocks):
        raise ValueError(f"stages must be 0-{len(blocks)} for this backbone, not {stages}")
    cut = len(blocks) - stages
    front = nn.Sequential(backbone.conv_stem, backbone.bn1, *blocks[:cut])
    return front, nn.Sequential(*blocks[cut:], backbone.conv_head, backbone.bn2)
