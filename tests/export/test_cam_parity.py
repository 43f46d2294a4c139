"""The explanation gate of export: every model's `cam` output held to pytorch-grad-cam on held-out crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.export import ExportOptions, export_bundle
from sperm_edge.export.cam_parity import CamReference, compare_cams
from tests.export.conftest import leftovers
from tests.runtime._bundle import make_checkpoint, make_crops


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cam-parity")
    return make_checkpoint(root / "best"), make_crops(root / "crops", n=24, seed=2)


@pytest.mark.slow
def test_every_model_records_its_cam_parity(checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    stem, crops = checkpoint
    options = ExportOptions(
        int8=True, calib=crops, eval=crops, val=crops, allow_drop=True, parity_count=16, latency_runs=2
    )
    result = export_bundle(stem, tmp_path / "bundle", options)
    models = result.manifest["models"]
    rejected = {r["precision"] for r in result.manifest.get("rejected", [])}
    explain = result.manifest["explain"]
    assert {k: explain[k] for k in ("method", "layer", "engine", "outputs", "maps")} == {
        "method": "Grad-CAM++",
        "layer": "attention (CBAM)",
        "engine": True,
        "outputs": ["logits", "cam", "features"],
        "maps": "explainer",  # no validation split to measure on: the LayerCAM explainer on blocks 4
    }
    explainer = explain["explainer"]
    assert explainer["file"] == "explain.onnx" and explainer["layer"] == "backbone.blocks.4"
    assert explainer["parity"]["passed"] and explainer["parity"]["criterion"] == "pearson_min >= 0.99"
    assert "LayerCAM" in explainer["parity"]["reference"] and explainer["ms_per_cell"] > 0
    assert [(c["maps"], c["layer"]) for c in explain["candidates"]] == [
        ("cam", "attention (CBAM)"),
        ("explainer", "backbone.blocks.3"),
        ("explainer", "backbone.blocks.4"),
    ]
    assert "explain.onnx" in result.manifest["files"]
    fp32 = models["fp32"]["cam_parity"]
    assert fp32["passed"] and fp32["max_abs_diff"] <= 1e-4 and fp32["n"] == 16
    assert "pytorch-grad-cam" in fp32["reference"]
    for precision in {"int8", "int8_cpu"} - rejected:
        cam = models[precision]["cam_parity"]
        assert cam["criterion"] == "pearson_mean >= 0.95" and cam["passed"] and cam["pearson_mean"] >= 0.95
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["models"]["fp32"]["cam_parity"] == fp32


def test_export_refuses_a_cam_output_that_misses_the_gate(
    checkpoint: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sperm_edge.export.cam_parity as cam_parity

    monkeypatch.setattr(cam_parity, "FP32_TOLERANCE", 0.0)  # no float arithmetic meets it
    out = tmp_path / "bundle"
    with pytest.raises(SpermEdgeError, match="cam output disagrees with pytorch-grad-cam"):
        export_bundle(checkpoint[0], out, ExportOptions(eval=checkpoint[1], parity_count=4, latency_runs=1))
    assert leftovers(out) == []


def test_int8_maps_are_judged_by_correlation() -> None:
    from sperm_edge.explain.maps import input_map

    rng = np.random.default_rng(0)
    grids = rng.uniform(0, 1, (6, 2, 4, 4)).astype(np.float32)
    targets = np.array([0, 1, 0, 1, 0, 1])
    maps = np.stack([input_map(grids[i, c], 32) for i, c in enumerate(targets)])
    reference = CamReference(maps, targets, "noise", "lib")
    assert compare_cams(grids, reference, "fp32").passed
    close = compare_cams(grids + rng.normal(0, 0.01, grids.shape).astype(np.float32), reference, "int8")
    assert close.passed and close.pearson_mean > 0.95 and close.max_abs_diff > 1e-4
    assert not compare_cams(np.ones_like(grids), reference, "fp32").passed
    shuffled = compare_cams(grids[::-1].copy(), reference, "int8")
    assert not shuffled.passed and shuffled.pearson_mean < 0.95
    with pytest.raises(SpermEdgeError, match="reference crops"):
        compare_cams(grids[:2], reference, "fp32")


def test_a_model_without_a_pool_then_linear_head_exports_logits_only(tmp_path: Path) -> None:
    import onnx

    from sperm_edge.export.onnx_export import export_onnx
    from tests.model.test_cam_head import MlpHead

    exported = export_onnx(MlpHead().eval(), 16, tmp_path / "m.onnx")
    assert [o.name for o in onnx.load(str(tmp_path / "m.onnx")).graph.output] == ["logits"]
    info = exported.describe()
    assert info["outputs"] == ["logits"] and "explain --torch" in info["cam_unavailable"]
