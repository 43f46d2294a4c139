from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import (
    OrtBackend,
    TensorRTBackend,
    available_backends,
    choose_auto,
    open_backend,
)
from sperm_edge.engines.ort import available_providers
from sperm_edge.errors import SpermEdgeError


def _batch(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)


def test_ort_cpu_runs_the_bundle_and_checks_its_input(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    size = bundle.card.preprocess.img_size
    backend = open_backend(bundle, "ort-cpu", threads=1)
    with pytest.raises(SpermEdgeError, match="not active"):
        backend.infer(_batch(1, size))
    with backend:
        assert backend.input_spec.shape == (-1, 3, size, size)
        assert backend.output_names == ("logits", "cam", "features") and backend.has_cam
        out = backend.infer(_batch(3, size))
        assert out.logits.shape == (3, len(bundle.card.classes))
        assert out.cam.shape[:2] == (3, len(bundle.card.classes)) and out.cam.ndim == 4 and out.features.shape[0] == 3
        assert backend.last_latency_ms > 0
        with pytest.raises(SpermEdgeError, match="does not fit"):
            backend.infer(_batch(1, size + 8))
    assert not backend.is_active


def test_torch_reference_and_ort_agree(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    x = _batch(4, bundle.card.preprocess.img_size)
    with open_backend(bundle, "ort-cpu") as ort, open_backend(bundle, "torch") as torch_backend:
        a, b = ort.infer(x), torch_backend.infer(x)
        assert torch_backend.output_names == ort.output_names
        for name in ort.output_names:
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt", "trt"])
def test_missing_engines_fail_with_what_to_install(tiny_bundle: Path, name: str) -> None:
    bundle = load_bundle(tiny_bundle)
    if name in available_backends(bundle):
        pytest.skip(f"{name} is installed here")
    with pytest.raises(SpermEdgeError, match=f"backend {name} is not available here: .*(install|JetPack|engine)"):
        open_backend(bundle, name)


def test_unknown_backend_lists_the_valid_ones(tiny_bundle: Path) -> None:
    with pytest.raises(SpermEdgeError, match="unknown backend 'onnx'; choose one of: auto, ort-cpu"):
        open_backend(load_bundle(tiny_bundle), "onnx")


def _bundle_with(tiny_bundle: Path, benchmarks: list[dict]):
    bundle = load_bundle(tiny_bundle)
    bundle.manifest = {
        **bundle.manifest,
        "benchmarks": benchmarks,
        "models": {"fp32": {"file": "model.onnx"}, "int8": {"file": "model.int8.onnx"}},
    }
    return bundle


def _row(backend: str, precision: str, ms: float, cpu: str = "Test CPU") -> dict:
    return {"backend": backend, "precision": precision, "batch": 1, "p50_ms": ms, "machine": {"cpu": cpu}}


def test_auto_takes_int8_only_where_it_measured_faster(tiny_bundle: Path) -> None:
    slower = _bundle_with(tiny_bundle, [_row("ort-cpu", "fp32", 5.0), _row("ort-cpu", "int8", 8.0)])
    faster = _bundle_with(tiny_bundle, [_row("ort-cpu", "fp32", 5.0), _row("ort-cpu", "int8", 3.0)])
    alone = _bundle_with(tiny_bundle, [_row("ort-cpu", "int8", 3.0)])
    cpu_only = ["ort-cpu", "torch"]
    assert choose_auto(slower, cpu_only, here="Test CPU") == ("ort-cpu", "fp32")
    assert choose_auto(faster, cpu_only, here="Test CPU") == ("ort-cpu", "int8")
    assert choose_auto(alone, cpu_only, here="Test CPU") == ("ort-cpu", "fp32")


def test_auto_ignores_other_machines_and_prefers_an_unmeasured_gpu(tiny_bundle: Path) -> None:
    elsewhere = _bundle_with(
        tiny_bundle, [_row("ort-cpu", "fp32", 5.0, cpu="Other"), _row("torch", "fp32", 1.0, cpu="Other")]
    )
    assert choose_auto(elsewhere, ["ort-cpu", "torch"], here="Test CPU") == ("ort-cpu", "fp32")
    measured = _bundle_with(tiny_bundle, [_row("ort-cpu", "fp32", 5.0), _row("torch", "fp32", 9.0)])
    assert choose_auto(measured, ["ort-cpu", "torch"], here="Test CPU") == ("ort-cpu", "fp32")
    assert choose_auto(measured, ["ort-cuda", "ort-cpu", "torch"], here="Test CPU") == ("ort-cuda", "fp32")
    gpu_measured = _bundle_with(
        tiny_bundle, [_row("ort-cpu", "fp32", 5.0), _row("ort-trt", "fp16", 0.8), _row("ort-cuda", "fp32", 1.5)]
    )
    assert choose_auto(gpu_measured, ["ort-trt", "ort-cuda", "ort-cpu"], here="Test CPU") == ("ort-trt", "fp16")


def test_trt_provider_chain_asks_for_int8_and_a_persisted_engine_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPERM_EDGE_CACHE", str(tmp_path / "cache"))  # the container's volume
    backend = OrtBackend(tmp_path / "model.int8.onnx", "trt", precision="int8")
    (name, options), cuda, cpu = backend.provider_chain()
    assert name == "TensorrtExecutionProvider" and options["trt_int8_enable"] and not options["trt_fp16_enable"]
    cache = Path(options["trt_engine_cache_path"])
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"] and cache.is_dir()
    assert cache.parent == tmp_path / "cache" / "ort-trt" and cache.name.startswith("trt")
    assert options["trt_timing_cache_path"] == str(cache) and options["trt_engine_cache_prefix"] == "model.int8.int8"
    assert cuda[0] == "CUDAExecutionProvider" and cpu == "CPUExecutionProvider"


def test_a_trt_engine_from_another_tensorrt_is_refused(tmp_path: Path) -> None:
    ok, why = TensorRTBackend.available()
    if not ok:
        pytest.skip(f"TensorRT is not installed here ({why})")
    backend = TensorRTBackend(tmp_path / "x.engine", "fp16", {"tensorrt": "1.0.0", "compute_capability": "0.0"})
    with pytest.raises(SpermEdgeError, match="was built with TensorRT 1.0.0"):
        backend.check_compatible()


@pytest.mark.parametrize("provider", ["cuda", "trt"])
def test_gpu_providers_run_the_bundle(tiny_bundle: Path, provider: str) -> None:
    name = {"cuda": "CUDAExecutionProvider", "trt": "TensorrtExecutionProvider"}[provider]
    if name not in available_providers():
        pytest.skip(f"{name} is not installed here (needs onnxruntime-gpu and an NVIDIA GPU)")
    bundle = load_bundle(tiny_bundle)
    x = _batch(2, bundle.card.preprocess.img_size)
    with open_backend(bundle, f"ort-{provider}") as gpu, open_backend(bundle, "ort-cpu") as cpu:
        np.testing.assert_allclose(gpu.infer(x).logits, cpu.infer(x).logits, atol=1e-2)


def test_a_model_exported_before_cam_returns_logits_only(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from sperm_edge.engines import OrtBackend, Outputs

    node = helper.make_node("GlobalAveragePool", ["input"], ["pooled"])
    flat = helper.make_node("Flatten", ["pooled"], ["scores"])
    graph = helper.make_graph(
        [node, flat],
        "old",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
    )
    path = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with OrtBackend(path, threads=1) as backend:
        out = backend.infer(np.ones((2, 3, 8, 8), np.float32))
    assert not backend.has_cam and out.cam is None and out.features is None and out.logits.shape == (2, 3)
    with pytest.raises(SpermEdgeError, match="no `logits`"):
        Outputs.from_named({"a": out.logits, "b": out.logits})
