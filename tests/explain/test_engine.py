"""Explanations from the engine's `cam` output: the maps, overlays and files of pytorch-grad-cam, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import open_backend
from sperm_edge.explain import GradCamExplainer, write_explanation
from sperm_edge.explain.engine import engine_explanation
from sperm_edge.explain.overlay import overlay
from sperm_edge.metrics import softmax
from sperm_edge.preprocess import decode_image, preprocess_batch


def _crops(masked_crops: Path) -> list[np.ndarray]:
    return [decode_image(p) for p in sorted(masked_crops.glob("*/*.png"))[:4]]


def test_engine_maps_match_pytorch_grad_cam_on_crops(tiny_bundle: Path, masked_crops: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    size = bundle.card.preprocess.img_size
    crops = _crops(masked_crops)
    crops[1] = crops[1][:, :100]  # non-square, like SMIDS crops
    with open_backend(bundle, "ort-cpu", threads=1) as engine:
        out = [engine.infer(preprocess_batch([rgb], bundle.card.preprocess)) for rgb in crops]
    with GradCamExplainer(bundle.checkpoint_stem()) as reference:
        for rgb, o in zip(crops, out, strict=True):
            for target in range(len(bundle.card.classes)):
                mine = engine_explanation(rgb, o.cam[0], softmax(o.logits)[0], bundle.card.classes, size, "x", target)
                theirs = reference.explain(rgb, target)
                assert np.abs(mine.input_cam - theirs.input_cam).max() <= 1e-4
                assert np.abs(mine.cam - theirs.cam).max() <= 1e-4 and mine.cam.shape == rgb.shape[:2]
                assert np.allclose(mine.probs, theirs.probs, atol=1e-5)
                assert mine.source == "engine" and theirs.source == "torch"


def test_overlay_is_pytorch_grad_cams_show_cam_on_image() -> None:
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    cam = rng.uniform(0, 1, (40, 30)).astype(np.float32)
    expected = show_cam_on_image(rgb.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=0.55)
    np.testing.assert_array_equal(overlay(rgb, cam), expected)


def test_engine_explanation_files_name_their_source(tmp_path: Path, masked_crops: Path, tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    rgb = _crops(masked_crops)[0]
    with open_backend(bundle, "ort-cpu", threads=1) as engine:
        o = engine.infer(preprocess_batch([rgb], bundle.card.preprocess))
    exp = engine_explanation(
        rgb, o.cam[0], softmax(o.logits)[0], bundle.card.classes, bundle.card.preprocess.img_size, "x"
    )
    png = write_explanation(tmp_path, "cell", rgb, exp, {"event": 3})
    info = json.loads(png.with_suffix(".json").read_text())
    assert png.is_file() and info["source"] == "engine" and info["method"] == "Grad-CAM++" and info["event"] == 3


def test_the_bundles_explainer_matches_pytorch_grad_cam_layer_cam(tiny_bundle: Path, masked_crops: Path) -> None:
    import torch
    from pytorch_grad_cam import LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from sperm_edge.explain.maps import input_map
    from sperm_edge.model.checkpoint import load_checkpoint
    from sperm_edge.runtime.session import bundle_explainer

    bundle = load_bundle(tiny_bundle)
    explainer = bundle_explainer(bundle)
    assert explainer is not None and explainer.layer == "backbone.blocks.4"  # unmeasured: the default stage
    spec, crops = bundle.card.preprocess, _crops(masked_crops)
    model = load_checkpoint(bundle.checkpoint_stem()).build_model().eval()
    x = torch.from_numpy(preprocess_batch(crops, spec))
    with LayerCAM(model, [model.backbone.blocks[4]]) as layer_cam:
        for target in range(len(bundle.card.classes)):
            reference = layer_cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * len(crops))
            grids = explainer.grids(crops, [target] * len(crops))
            mine = np.stack([input_map(grid, spec.img_size) for grid in grids])
            assert np.corrcoef(mine.ravel(), reference.ravel())[0, 1] > 0.999
    probs = np.full(len(bundle.card.classes), 0.25, np.float32)
    turned = explainer.explain(crops[0], probs, bundle.card.classes, 1, view=5)
    plain = explainer.explain(crops[0], probs, bundle.card.classes, 1)
    assert turned.method == plain.method == "LayerCAM" and turned.target_class == bundle.card.classes[1]
    assert turned.cam.shape == plain.cam.shape == crops[0].shape[:2]


@pytest.mark.parametrize("module", ["sperm_edge.explain.scores", "sperm_edge.explain.engine", "sperm_edge.explain"])
def test_the_explainer_does_not_import_the_runtime_or_torch(module: str) -> None:
    code = (
        f"import sys; import {module}; "
        "bad = [m for m in sys.modules if m.startswith('sperm_edge.runtime') or m in ('torch', 'pytorch_grad_cam')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
