"""TensorRT builder logic that runs without TensorRT (flags by version, names), and a real build where possible."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.export import tensorrt_build as tb
from tests.conftest import BLOCK_TORCH


@pytest.mark.parametrize(
    ("major", "precision", "flags"),
    [
        (10, "int8", ["INT8"]),  # JetPack 6: a Q/DQ network still needs the INT8 flag
        (10, "fp16", ["FP16"]),
        (10, "fp32", []),
        (11, "int8", []),  # strongly typed: no precision flags exist
        (11, "fp16", []),
        (11, "fp32", []),
    ],
)
def test_builder_flags_branch_on_the_tensorrt_version(major, precision, flags) -> None:
    assert tb.builder_flags_for(major, precision) == flags


def test_old_tensorrt_and_unknown_precisions_are_refused() -> None:
    with pytest.raises(SpermEdgeError, match="10.x"):
        tb.builder_flags_for(8, "int8")
    with pytest.raises(SpermEdgeError, match="int4"):
        tb.builder_flags_for(10, "int4")


def test_fp16_on_strongly_typed_tensorrt_needs_an_fp16_model() -> None:
    assert tb.needs_fp16_onnx(11, "fp16")
    assert not tb.needs_fp16_onnx(10, "fp16")
    assert not tb.needs_fp16_onnx(11, "int8")


def test_engine_names_carry_version_gpu_and_precision() -> None:
    assert tb.engine_file_name("10.3.0", "8.7", "int8") == "model.int8.trt10.3.0.sm87.engine"
    assert tb.engine_file_name("11.1.0", "9.0", "fp16") == "model.fp16.trt11.1.0.sm90.engine"
    assert tb.timing_cache_name("10.3.0", "8.7") == "timing.trt10.3.0.sm87.cache"
    assert tb.trt_major("10.3.0.30") == 10


def test_without_tensorrt_the_probe_says_how_to_build_on_the_target(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(SpermEdgeError, match="not installed.*JetPack"):
        tb.probe_target()


def test_without_a_gpu_the_probe_says_so(monkeypatch) -> None:
    fake = type(sys)("tensorrt")
    fake.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tb, "cuda_driver_gpu", lambda: None)
    with pytest.raises(SpermEdgeError, match="needs an NVIDIA GPU"):
        tb.probe_target()


def test_fp16_conversion_keeps_float32_io(tiny_bundle, tmp_path) -> None:
    import onnx

    path = tb.convert_to_fp16(tiny_bundle / "model.onnx", tmp_path / "model.fp16.onnx")
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed here")
def test_real_engine_build(tiny_bundle, tmp_path) -> None:
    try:
        target = tb.probe_target()
    except SpermEdgeError as err:
        pytest.skip(f"no usable GPU: {err}")
    built = tb.build_engine(
        tiny_bundle / "model.int8.onnx", tmp_path, "int8", target, max_batch=4, timing_cache=tmp_path / "t.cache"
    )
    assert (tmp_path / built.file).is_file() and (tmp_path / "t.cache").is_file()
    assert built.builder_flags == tb.builder_flags_for(target.major, "int8")


class _FakeTensorRT:
    """Just enough of the TensorRT Python API to drive build_engine and record what it was asked."""

    def __init__(self, version: str) -> None:
        self.__version__ = version
        self.calls: dict[str, list] = {"flags": [], "profile": [], "pool": [], "network_flags": []}
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level) -> None:
                pass

        class BuilderFlag:
            pass

        if version.startswith("10."):  # TensorRT 11 has no precision flags at all
            BuilderFlag.INT8, BuilderFlag.FP16 = "INT8", "FP16"

        class Tensor:
            name, shape = "input", (-1, 3, 32, 32)

        class Network:
            def get_input(self, index):
                return Tensor()

        class Cache:
            def serialize(self):
                return b"timing-cache"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls["pool"].append((pool, size))

            def set_flag(self, flag):
                fake.calls["flags"].append(flag)

            def add_optimization_profile(self, profile):
                pass

            def create_timing_cache(self, data):
                fake.calls["cache_in"] = data
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                pass

            def get_timing_cache(self):
                return Cache()

        class Profile:
            def set_shape(self, name, low, opt, high):
                fake.calls["profile"].append((name, low, opt, high))

        class Builder:
            def __init__(self, logger) -> None:
                pass

            def create_network(self, flags):
                fake.calls["network_flags"].append(flags)
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"serialized-plan"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger) -> None:
                pass

            def parse_from_file(self, path):
                fake.calls["parsed"] = path
                return True

        class Engine:
            names = ("input", "logits", "cam", "features")  # the bundle's ONNX model's I/O
            num_io_tensors = len(names)

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_mode(self, name):
                return "in" if name == "input" else "out"

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, plan):
                return Engine()

        self.Logger, self.BuilderFlag, self.Builder, self.OnnxParser, self.Runtime = (
            Logger,
            BuilderFlag,
            Builder,
            OnnxParser,
            Runtime,
        )
        self.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "workspace"})
        self.TensorIOMode = type("TensorIOMode", (), {"INPUT": "in", "OUTPUT": "out"})


@pytest.mark.parametrize("version", ["10.3.0", "11.1.0"])
def test_engines_are_added_to_a_bundle_named_and_recorded(tiny_bundle, tmp_path, monkeypatch, version) -> None:
    from sperm_edge.bundle import load_bundle
    from tests.conftest import run_cli

    fake = _FakeTensorRT(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tb, "cuda_driver_gpu", lambda: ("Orin", "8.7"))
    out, cache = tmp_path / "with-engines", tmp_path / "caches"
    args = ["export", str(tiny_bundle), "--out", str(out), "--trt", "--fp16", "--max-batch", "8"]
    assert run_cli([*args, "--timing-cache", str(cache)]) == 0
    bundle = load_bundle(out)
    engines = {e["precision"]: e for e in bundle.manifest["engines"]}
    assert set(engines) == {"int8", "fp16"}
    int8 = engines["int8"]
    assert int8["file"] == f"model.int8.trt{version}.sm87.engine" and int8["source"] == "model.int8.onnx"
    assert (out / int8["file"]).read_bytes() == b"serialized-plan"
    assert int8["max_batch"] == 8 and ("input", (1, 3, 32, 32), (8, 3, 32, 32), (8, 3, 32, 32)) in fake.calls["profile"]
    major = int(version.split(".")[0])
    assert fake.calls["flags"] == (["INT8", "FP16"] if major == 10 else [])
    assert engines["fp16"]["strongly_typed"] is (major == 11)
    assert engines["fp16"]["source"] == ("model.fp16.onnx" if major == 11 else "model.onnx")
    assert (cache / f"timing.trt{version}.sm87.cache").read_bytes() == b"timing-cache"
    assert bundle.manifest["versions"]["tensorrt"] == version
    assert set(bundle.manifest["files"]) >= {int8["file"], engines["fp16"]["file"], "model.onnx"}


def test_a_bundle_input_only_takes_engine_options(tiny_bundle, tmp_path, capsys) -> None:
    from tests.conftest import run_cli

    assert run_cli(["export", str(tiny_bundle), "--out", str(tmp_path / "b"), "--int8", "--trt"]) == 2
    assert "only adds TensorRT engines" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_the_engine_path_imports_without_torch() -> None:
    import subprocess

    code = BLOCK_TORCH + "import sperm_edge.export.engines, sperm_edge.export.tensorrt_build, sperm_edge.cli\n"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
