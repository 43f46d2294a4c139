"""The model wrapper Grad-CAM++ runs: imported only when an explanation is made (it needs torch)."""

from __future__ import annotations

import torch
from torch import nn


class FeatureGradModel(nn.Module):
    """Backbone without autograd, then attention and head with it: gradients only where Grad-CAM++ reads them.

    The backbone's output is detached and made to require grad, so backward stops there instead
    of running through the whole network; the heatmap is identical, since Grad-CAM++ only uses
    the activations and gradients at the attention module's output.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.model.backbone(x)
        features = features.detach().requires_grad_(torch.is_grad_enabled())
        return self.model.head(self.model.attention(features))
