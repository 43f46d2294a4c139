"""The bundle a full export writes: layout, manifest, hashes, retained checkpoint."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.engines.ort import new_session
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import sha256_file
from sperm_edge.model import get_entry
from sperm_edge.model.checkpoint import load_checkpoint
from tests.export.conftest import CORRUPT_NAME


def test_round_trip_loads_and_verifies(tiny_bundle, tiny_run) -> None:
    bundle = load_bundle(tiny_bundle)
    ckpt = load_checkpoint(tiny_run)
    assert bundle.card.arch == "cbam_efficientnet_lite0"
    # the checkpoint's card, plus what export measured (framing) and the versions that wrote the bundle
    assert bundle.card == replace(ckpt.card, framing=bundle.card.framing, versions=bundle.card.versions)
    assert {"fp32", "int8"} <= set(bundle.precisions())
    assert bundle.onnx_path("fp32").name == "model.onnx"
    assert bundle.onnx_path("int8").name == "model.int8.onnx"
    retained = load_checkpoint(bundle.checkpoint_stem())  # checks weights_sha256 against the copy
    assert retained.card.classes == ckpt.card.classes
    assert retained.meta["weights_file"] == "checkpoint.safetensors"
    on_disk = {p.name for p in tiny_bundle.iterdir()}
    assert on_disk == set(bundle.manifest["files"]) | {"manifest.json"}
    for name, entry in bundle.manifest["files"].items():
        assert entry["sha256"] == sha256_file(tiny_bundle / name)
        assert entry["size"] == (tiny_bundle / name).stat().st_size


def test_manifest_records_how_everything_was_measured(tiny_bundle) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    fp32 = manifest["models"]["fp32"]
    assert fp32["export"]["opset"] == 17 and "dynamo=False" in fp32["export"]["exporter"]
    parity = fp32["parity"]
    assert parity["max_abs_logit_diff"] <= parity["tolerance"] and parity["top1_agreement"] == 1.0 and parity["n"] > 0
    int8 = manifest["models"]["int8"]
    assert int8["quantization"]["calibration_method"] == "minmax"
    # by default the architecture's pattern (Lite0: nothing kept in float, chosen on validation splits)
    assert int8["quantization"]["keep_float"] == list(get_entry(manifest["arch"]).int8_keep_float)
    # what the search tried (here the first candidate only: --search-budget 0), in the entry's own keys
    assert int8["calibration"] == "minmax" and int8["keep_float"] == int8["quantization"]["keep_float"]
    assert int8["search"]["chosen"] == 1 and int8["search"]["stopped"] in ("passed", "time budget")
    (first,) = int8["search"]["candidates"]
    assert first["calibration"] == "minmax" and first["per_channel"]
    assert first["val_accuracy"] == int8["gate"]["accuracy"]
    assert {"accuracy", "macro_f1", "top1_agreement_fp32"} <= set(int8["accuracy"])
    assert int8["gate"]["max_drop_points"] == 1.0
    # the ship-or-refuse gate decides on validation images; test accuracy is only reported
    assert int8["gate"]["decided_on"].startswith("val split") and int8["accuracy"]["images"].startswith("test split")
    assert manifest["gate_images"]["n"] == int8["gate"]["n"] > 0
    assert int8["qdq_check"]["tensorrt_ready"] is True
    benchmarks = {b["precision"]: b for b in manifest["benchmarks"]}
    assert set(benchmarks) == set(manifest["models"])
    for entry in benchmarks.values():
        assert entry["backend"] == "ort-cpu" and entry["batch"] == 1 and entry["p50_ms"] > 0
        assert {"cpu", "threads"} <= set(entry["machine"])
    assert "onnxruntime" in manifest["versions"] and manifest["engines"] == []
    retained = json.loads((tiny_bundle / "checkpoint.json").read_text())
    assert manifest["temperature"] == retained["temperature"] > 0  # what every backend's logits are divided by
    framing = manifest["framing"]  # measured on the training split's crops, for the runtime's field crops
    assert framing["measured"] > 0 and framing["crop_side_px"] == 40.0 and framing["crop_scale"] > 1.0


def test_cpu_variant_is_labelled_or_explained(tiny_bundle) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    if "int8_cpu" in manifest["models"]:
        entry = manifest["models"]["int8_cpu"]
        assert entry["cpu_only"] is True and entry["file"] == "model.int8_cpu.onnx"
        latency = {b["precision"]: b["p50_ms"] for b in manifest["benchmarks"]}
        assert "int8_cpu" in latency
    else:
        reasons = [r["reason"] for r in manifest["rejected"] if r["precision"] == "int8_cpu"]
        assert reasons and not (tiny_bundle / "model.int8_cpu.onnx").exists()


def test_calibration_reports_the_corrupt_image(tiny_bundle) -> None:
    calibration = json.loads((tiny_bundle / "manifest.json").read_text())["calibration"]
    assert calibration["skipped_count"] == 1
    assert Path(calibration["skipped"][0]["file"]).name == CORRUPT_NAME
    assert calibration["n"] == 36 and calibration["method"] == "minmax"


def test_onnx_has_a_dynamic_batch_and_no_runtime_padding_arithmetic(tiny_bundle) -> None:
    graph = onnx.load(str(tiny_bundle / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not {"Shape", "Ceil"} & {node.op_type for node in graph.node}
    session = new_session(tiny_bundle / "model.onnx")
    assert [o.name for o in session.get_outputs()] == ["logits", "cam", "features"]
    for batch in (1, 5):
        logits, cam, features = session.run(None, {"input": np.zeros((batch, 3, 32, 32), np.float32)})
        assert logits.shape == (batch, 3) and cam.shape == (batch, 3, 1, 1) and features.shape == (batch, 1280)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_file_is_refused_by_name(tiny_bundle, tmp_path, damage) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    target = copy / "model.int8.onnx"
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[:-10]
    target.write_bytes(bytes(data))
    with pytest.raises(SpermEdgeError, match=r"model\.int8\.onnx"):
        load_bundle(copy)


def test_library_export_without_any_real_images_falls_back_to_noise(tiny_run, tmp_path) -> None:
    from sperm_edge.export import export_bundle

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(tiny_run / "best.safetensors", run / "best.safetensors")
    meta = json.loads((tiny_run / "best.json").read_text())
    del meta["split"]
    (run / "best.json").write_text(json.dumps(meta))
    result = export_bundle(run / "best", tmp_path / "bundle")
    manifest = load_bundle(result.path).manifest
    assert set(manifest["models"]) == {"fp32"} and "accuracy" not in manifest["models"]["fp32"]
    assert manifest["models"]["fp32"]["parity"]["images"].startswith("uniform noise")
    assert [b["precision"] for b in manifest["benchmarks"]] == ["fp32"]
    assert manifest["drift"]["available"] is False and "drift.npz" not in manifest["files"]  # no split to fit on


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/../../outside.onnx"])
def test_a_manifest_cannot_point_outside_its_bundle(tiny_bundle: Path, tmp_path: Path, name: str) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    (tmp_path / "outside.onnx").write_bytes(b"x")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": "0" * 64, "size": 1}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SpermEdgeError, match="lists a file outside itself"):
        load_bundle(copy)
    manifest["files"].pop(name)
    manifest["classes"] = ["a", "a"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SpermEdgeError, match="names a class twice"):
        load_bundle(copy)
