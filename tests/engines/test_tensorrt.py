"""The native TensorRT backend around TensorRT and the CUDA runtime, which cannot be installed here.

Stand-ins for the `tensorrt` and `cuda.bindings.runtime` modules (written from their documented
API) let the tests check what this project's code does with them: activation frees everything it
made when a later step fails, mismatched engines are refused with the command that rebuilds them
(`--trt`), and `auto` says why it picked what it picked.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import auto_choice, availability, open_backend
from sperm_edge.engines.tensorrt import TensorRTBackend, engine_mismatch
from sperm_edge.errors import SpermEdgeError

HERE_TRT, HERE_SM = "10.3.0", "8.7"


class FakeCudart:
    """cuda-python's runtime calls return (error, *values); this one counts what is allocated and freed."""

    def __init__(self) -> None:
        self.allocated: set[int] = set()
        self.streams: set[int] = set()
        self._next = 1000

    def _id(self) -> int:
        self._next += 1
        return self._next

    def cudaSetDevice(self, device):  # noqa: N802 (CUDA's names)
        return (0,)

    def cudaGetDeviceProperties(self, device):  # noqa: N802
        return 0, types.SimpleNamespace(major=8, minor=7)

    def cudaMalloc(self, size):  # noqa: N802
        ptr = self._id()
        self.allocated.add(ptr)
        return 0, ptr

    def cudaFree(self, ptr):  # noqa: N802
        self.allocated.discard(ptr)
        return (0,)

    def cudaStreamCreate(self):  # noqa: N802
        stream = self._id()
        self.streams.add(stream)
        return 0, stream

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self.streams.discard(stream)
        return (0,)


def _fake_tensorrt(fail_at: str | None) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = HERE_TRT

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    class Context:
        def set_tensor_address(self, name, ptr):
            if fail_at == "address":
                raise RuntimeError("set_tensor_address failed")

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return (-1, 3, 64, 64) if name == "input" else (-1, 4)

        def get_tensor_profile_shape(self, name, profile):
            return (1, 3, 64, 64), (8, 3, 64, 64), (8, 3, 64, 64)

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, plan):
            return None if fail_at == "deserialize" else Engine()

    trt.Logger, trt.Runtime = Logger, Runtime
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: "float32"
    return trt


@pytest.fixture
def cuda(monkeypatch) -> FakeCudart:
    cudart = FakeCudart()
    cuda_pkg, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    bindings.runtime, cuda_pkg.bindings = cudart, bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda_pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(None))
    return cudart


def _engine(tmp_path: Path, tensorrt: str = HERE_TRT, sm: str = HERE_SM) -> TensorRTBackend:
    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"plan")
    return TensorRTBackend(path, "fp16", {"file": path.name, "tensorrt": tensorrt, "compute_capability": sm})


@pytest.mark.parametrize("fail_at", ["address", "deserialize"])
def test_a_failed_activation_frees_every_buffer_and_the_stream(cuda, tmp_path, monkeypatch, fail_at) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(fail_at))
    backend = _engine(tmp_path)
    with pytest.raises((SpermEdgeError, RuntimeError)):
        backend.__enter__()
    assert not backend.is_active
    assert cuda.allocated == set() and cuda.streams == set()


def test_activation_then_exit_frees_everything(cuda, tmp_path) -> None:
    with _engine(tmp_path) as backend:
        assert backend.input_spec.max_batch == 8 and len(cuda.allocated) == 2 and len(cuda.streams) == 1
    assert cuda.allocated == set() and cuda.streams == set()


def test_an_engine_from_another_tensorrt_or_gpu_is_refused_with_the_rebuild_command(cuda, tmp_path) -> None:
    with pytest.raises(SpermEdgeError, match=r"built with TensorRT 8\.6\.1.*sperm-edge export .* --trt") as err:
        _engine(tmp_path, tensorrt="8.6.1").check_compatible()
    assert "--tensorrt" not in str(err.value)
    with pytest.raises(SpermEdgeError, match=r"compute capability 7\.2, this GPU is 8\.7.*--trt"):
        _engine(tmp_path, sm="7.2").check_compatible()
    assert engine_mismatch({"tensorrt": "10.3.1", "compute_capability": "8.7"}, HERE_TRT, HERE_SM) is None


def _bundle_with_engines(tiny_bundle: Path, engines: list[dict]):
    bundle = load_bundle(tiny_bundle)
    bundle.manifest = {**bundle.manifest, "engines": engines, "benchmarks": []}
    return bundle


def test_trt_availability_says_how_to_build_a_missing_or_mismatched_engine(cuda, tiny_bundle) -> None:
    ok, why = availability("trt", _bundle_with_engines(tiny_bundle, []))
    assert not ok and "no TensorRT engine" in why and "--trt" in why and "--tensorrt" not in why
    old = {
        "file": "model.fp16.trt8.6.1.sm87.engine",
        "precision": "fp16",
        "tensorrt": "8.6.1",
        "compute_capability": "8.7",
    }
    ok, why = availability("trt", _bundle_with_engines(tiny_bundle, [old]))
    assert not ok and "built with TensorRT 8.6.1" in why and f"sperm-edge export {tiny_bundle}" in why
    with pytest.raises(SpermEdgeError, match="backend trt is not available here.*--trt"):
        open_backend(_bundle_with_engines(tiny_bundle, [old]), "trt")


def test_auto_prefers_a_matching_engine_and_says_why(cuda, tiny_bundle) -> None:
    fits = {"file": "model.fp16.trt10.3.0.sm87.engine", "precision": "fp16", "tensorrt": HERE_TRT,
            "compute_capability": HERE_SM}  # fmt: skip
    bundle = _bundle_with_engines(tiny_bundle, [fits])
    assert availability("trt", bundle) == (True, "")
    backend, precision, reason = auto_choice(bundle, ["trt", "ort-cpu"], here="Test CPU")
    assert (backend, precision) == ("trt", "fp32") and "no latencies measured" in reason
    bundle.manifest["benchmarks"] = [
        {"backend": "ort-cpu", "precision": "fp32", "batch": 1, "p50_ms": 5.0, "machine": {"cpu": "Test CPU"}}
    ]
    backend, _, reason = auto_choice(bundle, ["trt", "ort-cpu"], here="Test CPU")
    assert backend == "trt" and "not measured at export" in reason
    backend, _, reason = auto_choice(bundle, ["ort-cpu"], here="Test CPU")
    assert backend == "ort-cpu" and "ort-cpu fp32 5.00 ms" in reason
