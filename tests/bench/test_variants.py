"""Which variants a benchmark plans, and why the ones that cannot run here are unavailable."""

from __future__ import annotations

import json

import pytest

from sperm_edge.bench.variants import BACKENDS, REFERENCE, has_gpu, parse_backends, plan_variants
from sperm_edge.bundle import load_bundle
from sperm_edge.errors import SpermEdgeError


def _by_key(planned) -> dict:
    return {p.variant.key: p for p in planned}


def test_every_backend_is_planned_with_the_reference_first(tiny_bundle) -> None:
    planned = plan_variants(load_bundle(tiny_bundle), list(BACKENDS))
    assert (planned[0].variant.backend, planned[0].variant.precision) == REFERENCE
    keys = _by_key(planned)
    for key in ("torch-eager/fp32", "torch-channels-last/fp32", "ort-cpu/fp32", "ort-cpu/int8", "ort-cpu+tta/fp32"):
        assert keys[key].status == "ok", keys[key].reason
    assert keys["ort-cpu/int8"].variant.file == "model.int8.onnx"
    assert keys["ort-cpu+tta/fp32"].variant.file == keys["ort-cpu/fp32"].variant.file
    assert {"ort-cuda/fp32", "ort-trt/fp16", "ort-trt/int8", "trt/fp16", "trt/int8"} <= set(keys)


@pytest.mark.skipif(has_gpu(), reason="this machine has a GPU")
def test_gpu_rows_say_why_they_are_unavailable(tiny_bundle) -> None:
    keys = _by_key(plan_variants(load_bundle(tiny_bundle), list(BACKENDS)))
    for key in ("ort-cuda/fp32", "ort-trt/fp16", "ort-trt/int8", "trt/fp16", "trt/int8"):
        assert keys[key].status == "unavailable"
        assert "no GPU" in keys[key].reason
    assert "CUDAExecutionProvider" in keys["ort-cuda/fp32"].reason
    assert "TensorrtExecutionProvider" in keys["ort-trt/fp16"].reason
    assert "TensorRT engine" in keys["trt/fp16"].reason


def test_a_bundle_without_int8_has_an_unavailable_int8_row(tiny_bundle) -> None:
    manifest_path = tiny_bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["models"]["int8"]
    manifest_path.write_text(json.dumps(manifest))
    keys = _by_key(plan_variants(load_bundle(tiny_bundle, verify=False), ["ort-cpu"]))
    assert keys["ort-cpu/fp32"].status == "ok"
    assert keys["ort-cpu/int8"].status == "unavailable"
    assert "no int8 ONNX model" in keys["ort-cpu/int8"].reason


def test_backend_names_are_checked() -> None:
    assert parse_backends("all") == list(BACKENDS)
    assert parse_backends(" ort-cpu, trt ") == ["ort-cpu", "trt"]
    with pytest.raises(SpermEdgeError, match="unknown backend.*openvino.*choose from"):
        parse_backends("ort-cpu,openvino")
