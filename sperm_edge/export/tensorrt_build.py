"""ONNX -> TensorRT engine, built on the machine that will run it.

Written against NVIDIA's TensorRT Python API documentation (Builder, OnnxParser,
IBuilderConfig.set_memory_pool_limit, create_optimization_profile, timing caches) for two lines:

- TensorRT 10.x (JetPack 6 on Jetson Orin): networks are weakly typed by default, so a Q/DQ
  (explicitly quantized) network still needs BuilderFlag.INT8, and FP16 kernels need
  BuilderFlag.FP16.
- TensorRT 11.x: networks are always strongly typed and the precision flags are gone; INT8 comes
  from the Q/DQ nodes and FP16 from an FP16 ONNX model (converted here with ModelOpt AutoCast if
  installed, else ONNX Runtime's float16 converter, keeping FP32 inputs and outputs).

Engines and timing caches only fit the GPU and TensorRT version that made them, so both are
named by TensorRT version, compute capability and precision; a build logs its progress
(`trt_progress`), since it takes minutes on a Jetson. `tensorrt` is imported lazily: this
module imports (and its naming and version logic is tested) without it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.trt_progress import BuildProgress, attach
from sperm_edge.hardware import cuda_driver_gpu
from sperm_edge.io import atomic_write_bytes

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16", "fp32")
BUILD_ON_TARGET = (
    "build engines on the machine that will run them: install TensorRT there (Jetson: it comes with JetPack, "
    "apt install python3-libnvinfer; desktop GPU: pip install tensorrt), copy the bundle over and run "
    "`sperm-edge export BUNDLE --out BUNDLE_TRT --trt [--fp16]` (no PyTorch needed), or build from the "
    "bundle's ONNX with trtexec (TensorRT 10: trtexec --onnx=BUNDLE/model.int8.onnx --int8 --saveEngine=...)"
)


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as err:
        raise SpermEdgeError(f"--trt needs TensorRT, which is not installed here ({err}); {BUILD_ON_TARGET}") from err
    return tensorrt


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError as err:
        raise SpermEdgeError(f"cannot read a TensorRT version from {version!r}") from err


def builder_flags_for(major: int, precision: str) -> list[str]:
    """Names of the `tensorrt.BuilderFlag`s to set for `precision` on TensorRT `major`.

    TensorRT 10 is weakly typed: INT8 (even for Q/DQ networks) and FP16 need their flags.
    TensorRT 11 is strongly typed and has no precision flags: the ONNX model's types decide.
    """
    if precision not in PRECISIONS:
        raise SpermEdgeError(f"unknown engine precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if major < 10:
        raise SpermEdgeError(f"TensorRT {major}.x is not supported; use TensorRT 10.x (JetPack 6) or 11.x")
    if major >= 11:
        return []
    return {"int8": ["INT8"], "fp16": ["FP16"], "fp32": []}[precision]


def needs_fp16_onnx(major: int, precision: str) -> bool:
    """Strongly typed TensorRT (11+) builds FP16 only from a model whose tensors are FP16."""
    return precision == "fp16" and major >= 11


def engine_file_name(trt_version: str, compute_capability: str, precision: str) -> str:
    """`model.{precision}.trt{version}.sm{major}{minor}.engine`, e.g. model.int8.trt10.3.0.sm87.engine."""
    if precision not in PRECISIONS:
        raise SpermEdgeError(f"unknown engine precision {precision!r}; known: {', '.join(PRECISIONS)}")
    sm = compute_capability.replace(".", "")
    return f"model.{precision}.trt{trt_version}.sm{sm}.engine"


def timing_cache_name(trt_version: str, compute_capability: str) -> str:
    return f"timing.trt{trt_version}.sm{compute_capability.replace('.', '')}.cache"


@dataclass
class Target:
    """The TensorRT and GPU this machine offers."""

    tensorrt: str
    compute_capability: str  # "8.7"
    gpu: str

    @property
    def major(self) -> int:
        return trt_major(self.tensorrt)


def probe_target() -> Target:
    """TensorRT version and GPU compute capability; a SpermEdgeError saying how to proceed if either is absent."""
    trt = _import_tensorrt()
    gpu = cuda_driver_gpu()
    if gpu is None:
        raise SpermEdgeError(f"--trt needs an NVIDIA GPU, and none is usable here (no CUDA driver); {BUILD_ON_TARGET}")
    target = Target(tensorrt=trt.__version__, compute_capability=gpu[1], gpu=gpu[0])
    builder_flags_for(target.major, "fp32")  # refuses TensorRT older than 10 now, not after the export
    return target


@dataclass
class EngineBuild:
    """One built engine: the manifest's `engines` entry."""

    file: str
    precision: str
    source: str
    tensorrt: str
    compute_capability: str
    gpu: str
    min_batch: int
    max_batch: int
    opt_batch: int
    builder_flags: list[str]
    strongly_typed: bool
    workspace_mb: int
    timing_cache: str
    seconds: float

    def describe(self) -> dict:
        return asdict(self)


def convert_to_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """FP16 ONNX with FP32 inputs/outputs for strongly typed TensorRT (ModelOpt AutoCast if present)."""
    import onnx

    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision

        model = convert_to_mixed_precision(onnx_path=str(fp32_path), low_precision_type="fp16", keep_io_types=True)
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return Path(out_path)


def build_engine(
    onnx_path: str | Path,
    out_dir: str | Path,
    precision: str,
    target: Target,
    max_batch: int = 16,
    opt_batch: int | None = None,
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
) -> EngineBuild:
    """Parse `onnx_path`, build a serialized engine for batch 1..max_batch, write it to `out_dir`.

    The timing cache at `timing_cache` is read if present and written back after the build, so later
    builds on this GPU skip tactic timing.
    """
    trt = _import_tensorrt()
    flags = builder_flags_for(target.major, precision)
    opt_batch = min(opt_batch or max_batch, max_batch)
    if not 1 <= opt_batch <= max_batch:
        raise SpermEdgeError(f"engine batch sizes must satisfy 1 <= opt <= max, got opt {opt_batch}, max {max_batch}")
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since 10; 11 is always strongly typed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SpermEdgeError(f"TensorRT {target.tensorrt} cannot parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)[1:]
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, (1, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cached = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cached), False)
    if cached:
        log.info("timing cache %s: %d bytes from earlier builds on this GPU", cache_path, len(cached))
    monitor = attach(trt, config, BuildProgress(f"TensorRT {precision} build"))  # noqa: F841 (alive for the build)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SpermEdgeError(f"TensorRT {target.tensorrt} failed to build a {precision} engine (see its log above)")
    name = engine_file_name(target.tensorrt, target.compute_capability, precision)
    atomic_write_bytes(Path(out_dir) / name, bytes(plan))
    if cache_path:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    _check_engine(trt, logger, bytes(plan), name)
    seconds = round(time.perf_counter() - start, 2)
    log.info("built %s in %.1f s", name, seconds)
    return EngineBuild(
        file=name,
        precision=precision,
        source=Path(onnx_path).name,
        tensorrt=target.tensorrt,
        compute_capability=target.compute_capability,
        gpu=target.gpu,
        min_batch=1,
        max_batch=max_batch,
        opt_batch=opt_batch,
        builder_flags=flags,
        strongly_typed=target.major >= 11,
        workspace_mb=workspace_mb,
        timing_cache=str(cache_path) if cache_path else "",
        seconds=seconds,
    )


def _check_engine(trt, logger, plan: bytes, name: str) -> None:
    """The plan deserializes on this GPU and has one input and the ONNX model's outputs (logits[, cam, features])."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise SpermEdgeError(f"the engine {name} just built does not deserialize")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if len(inputs) != 1 or outputs not in (["logits"], ["logits", "cam", "features"]):
        raise SpermEdgeError(
            f"the engine {name} has inputs {inputs} and outputs {outputs}; expected one input and "
            "logits (with cam and features for a model that explains itself)"
        )
