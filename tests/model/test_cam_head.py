"""The closed-form Grad-CAM++ of `CamClassifier` against pytorch-grad-cam itself, for every registered architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from sperm_edge.explain.maps import input_map
from sperm_edge.model import create_model, list_models
from sperm_edge.model.cam_head import CamClassifier, closed_form_reason, linear_head

SIZE = 96  # small, but a feature grid of at least 3 x 3 for every architecture
CLASSES = 4


@pytest.mark.parametrize("name", list_models())
def test_closed_form_matches_pytorch_grad_cam_for_every_class(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=CLASSES).eval()
    x = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    wrapped = CamClassifier(model, SIZE).eval()
    with torch.no_grad():
        logits, cam, features = wrapped(x)
        reference = model(x)
    assert torch.equal(logits, reference)
    assert (
        cam.shape[:2] == (3, CLASSES) and min(cam.shape[2:]) >= 3 and features.shape == (3, model.head[-1].in_features)
    )
    assert (cam >= 0).all()
    active = 0
    with GradCAMPlusPlus(model, [model.attention]) as library:
        for c in range(CLASSES):
            maps = library(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x))
            for n in range(len(x)):
                mine = input_map(cam[n, c].numpy(), SIZE)
                assert np.abs(mine - maps[n]).max() <= 1e-4, (c, n)
                active += int(maps[n].max() > 0.5)
    assert active >= CLASSES  # most maps are real maps, not all-zero ones


def test_pooled_features_are_what_the_linear_layer_reads() -> None:
    torch.manual_seed(1)
    model = create_model("simple_cnn", num_classes=3).eval()
    _, linear = linear_head(model)
    with torch.no_grad():
        logits, _, features = CamClassifier(model, 64)(torch.rand(2, 3, 64, 64))
    assert torch.allclose(linear(features), logits)


class MlpHead(nn.Module):
    """A classifier whose head is an MLP: no closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3)
        self.attention = nn.Identity()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.backbone(x)))


def test_a_head_that_is_not_pool_then_linear_says_so() -> None:
    model = MlpHead()
    assert linear_head(model) is None
    assert "not global-average-pool then one linear layer" in closed_form_reason(model)
    with pytest.raises(ValueError, match="explain --torch"):
        CamClassifier(model, 32)
    assert closed_form_reason(create_model("simple_cnn", num_classes=2)) is None
