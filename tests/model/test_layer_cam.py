"""The LayerCAM explainer's forward-pass gradient against pytorch-grad-cam's LayerCAM (autograd) on the same layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from sperm_edge.explain.maps import input_map
from sperm_edge.export.onnx_export import _freeze_same_padding
from sperm_edge.model import create_model
from sperm_edge.model.layer_cam import (
    LayerCamExplainer,
    UnsupportedLayer,
    fine_stage,
    fine_stages,
)

SIZE = 96
CLASSES = 4
COVERED = ("cbam_efficientnet_lite0", "efficientnet_lite0")


def _trained_looking(model: nn.Module) -> nn.Module:
    """Random batch-norm statistics and affine terms, so that ReLU6 masks, saturation and CBAM's gates all vary
    (fresh batch norms are near-identities and would leave most of the chain untested)."""
    generator = torch.Generator().manual_seed(1)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            size = layer.num_features
            layer.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            layer.running_var.copy_(torch.rand(size, generator=generator) * 1.5 + 0.5)
            layer.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name", COVERED)
@pytest.mark.parametrize("frozen", [False, True], ids=["same-padding", "frozen-padding"])
def test_explainer_matches_pytorch_grad_cam_layer_cam_for_every_class(name: str, frozen: bool) -> None:
    torch.manual_seed(0)
    model = _trained_looking(create_model(name, num_classes=CLASSES))
    explained = _freeze_same_padding(model, SIZE)[0] if frozen else model
    explainer = LayerCamExplainer(explained).eval()
    assert explainer.stage == fine_stage(model) == 4 and explainer.layer == "backbone.blocks.4"
    x = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    with LayerCAM(model, [model.backbone.blocks[explainer.stage]]) as layer_cam:
        for k in range(CLASSES):
            with torch.no_grad():
                logits, cam = explainer(x, torch.full((3,), k))
            assert torch.allclose(logits, model(x), atol=1e-5)
            reference = layer_cam(input_tensor=x, targets=[ClassifierOutputTarget(k)] * 3)
            mine = np.stack([input_map(grid.numpy(), SIZE) for grid in cam])
            assert cam.shape == (3, SIZE // 16, SIZE // 16)
            assert np.abs(mine - reference).max() < 1e-4, f"class {k}"


def test_each_image_gets_the_map_of_its_own_class() -> None:
    torch.manual_seed(0)
    model = _trained_looking(create_model("cbam_efficientnet_lite0", num_classes=CLASSES))
    explainer = LayerCamExplainer(model, stage=3).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        _, mixed = explainer(x, torch.tensor([0, 2]))
        _, first = explainer(x, torch.tensor([0, 0]))
        _, third = explainer(x, torch.tensor([2, 2]))
    assert torch.allclose(mixed[0], first[0]) and torch.allclose(mixed[1], third[1])
    assert not torch.allclose(first[1], third[1])


def test_stages_on_the_fine_grid() -> None:
    model = create_model("cbam_efficientnet_lite0", num_classes=CLASSES)
    assert fine_stages(model) == [3, 4]  # blocks 3 and 4 end on the 14 x 14 grid at 224 px


@pytest.mark.parametrize(("name", "why"), [("efficientnet_b0", "SiLU"), ("simple_cnn", "not an EfficientNet")])
def test_models_outside_the_closed_form_say_why_before_any_export(name: str, why: str, tmp_path) -> None:
    from sperm_edge.export.onnx_export import export_explainer_onnx

    model = create_model(name, num_classes=CLASSES).eval()
    with pytest.raises(UnsupportedLayer, match=why):  # not a failed trace: export keeps the Grad-CAM++ map
        export_explainer_onnx(model, SIZE, tmp_path / "explain.onnx")
    assert not (tmp_path / "explain.onnx").exists()
