from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sperm_edge.bundle import load_bundle
from sperm_edge.errors import SpermEdgeError
from sperm_edge.explain import GradCamExplainer, write_explanation
from sperm_edge.preprocess import decode_image


def _crop(masked_crops: Path) -> np.ndarray:
    return decode_image(next((masked_crops / "01_Normal").glob("*.png")))


def test_heatmap_covers_the_crop_and_names_the_class(tiny_bundle: Path, masked_crops: Path) -> None:
    rgb = _crop(masked_crops)[:, :120]  # non-square, like SMIDS crops
    with GradCamExplainer(load_bundle(tiny_bundle).checkpoint_stem()) as explainer:
        exp = explainer.explain(rgb)
        other = explainer.explain(rgb, target="04_Amorphous")
    assert exp.cam.shape == rgb.shape[:2] and exp.cam.dtype == np.float32
    assert 0.0 <= exp.cam.min() and exp.cam.max() <= 1.0
    assert exp.target == exp.predicted and abs(exp.probs.sum() - 1) < 1e-5
    assert other.target_class == "04_Amorphous" and np.allclose(other.probs, exp.probs, atol=1e-6)
    info = exp.to_dict()
    assert info["method"] == "Grad-CAM++" and info["layer"] == "attention (CBAM)"
    assert set(info["heat"]) == {"peak", "centroid", "mean", "area_above_half", "central_share"}


def test_explaining_inside_inference_mode_still_gets_gradients(tiny_bundle: Path, masked_crops: Path) -> None:
    with GradCamExplainer(load_bundle(tiny_bundle).checkpoint_stem()) as explainer, torch.inference_mode():
        exp = explainer.explain(_crop(masked_crops))
    assert np.isfinite(exp.cam).all() and exp.cam.max() > 0


def test_hooks_are_released_every_time(tiny_bundle: Path, masked_crops: Path) -> None:
    stem = load_bundle(tiny_bundle).checkpoint_stem()
    rgb = _crop(masked_crops)
    with GradCamExplainer(stem) as explainer:
        attention = explainer.model.model.attention
        assert explainer.hook_count == 2 and len(attention._forward_hooks) == 2
        for _ in range(100):  # a long run: nothing accumulates between explanations
            explainer.explain(rgb)
            assert explainer._cam.outputs is None and explainer._cam.activations_and_grads.gradients == []
        assert len(attention._forward_hooks) == 2
    assert explainer.hook_count == 0 and len(attention._forward_hooks) == 0
    for _ in range(100):  # open and close repeatedly: no hook is left behind
        with explainer:
            assert len(attention._forward_hooks) == 2
        assert len(attention._forward_hooks) == 0
    with pytest.raises(SpermEdgeError, match="already open"), explainer, explainer:
        pass
    assert len(attention._forward_hooks) == 0


def test_explain_needs_an_open_explainer(tiny_bundle: Path) -> None:
    explainer = GradCamExplainer(load_bundle(tiny_bundle).checkpoint_stem())
    with pytest.raises(SpermEdgeError, match="not open"):
        explainer.explain(np.zeros((8, 8, 3), np.uint8))


def test_written_explanation_is_a_panel_and_a_json(tiny_bundle: Path, masked_crops: Path, tmp_path: Path) -> None:
    import json

    import cv2

    rgb = _crop(masked_crops)
    with GradCamExplainer(load_bundle(tiny_bundle).checkpoint_stem()) as explainer:
        exp = explainer.explain(rgb)
    png = write_explanation(tmp_path, "cell", rgb, exp, {"event": 7})
    panel = cv2.imread(str(png))
    assert panel.shape[0] >= 224 and panel.shape[1] > 2 * 224
    info = json.loads((tmp_path / "cell.json").read_text())
    assert info["event"] == 7 and info["image"] == "cell.png" and info["class"] in exp.classes
