"""Native TensorRT 10 engines (`BUNDLE/*.engine`), run with the name-based tensor API.

Written against the TensorRT 10 Python API: `Runtime.deserialize_cuda_engine`, an execution
context, `set_input_shape` for the dynamic batch, `set_tensor_address` and `execute_async_v3` on a
CUDA stream; device memory through cuda-python's runtime bindings (`cudaMalloc`,
`cudaMemcpyAsync`). An engine only runs on the GPU model and TensorRT version it was built with,
so both are checked against the bundle's manifest before deserializing (`engine_mismatch`), and a
mismatch is refused with the command that rebuilds it here. Every output of the engine (`logits`,
and `cam`, `features` where the ONNX model had them) is copied back and returned by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sperm_edge.engines.base import Backend, InputSpec, Outputs, missing
from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)

_INSTALL = (
    "TensorRT ships with JetPack on Jetson (python3-libnvinfer); on a desktop GPU: pip install tensorrt cuda-python"
)


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as err:
        raise missing("TensorRT", _INSTALL) from err
    return tensorrt


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as err:
            raise missing("cuda-python (CUDA runtime bindings)", "pip install cuda-python") from err
    return cudart


def _check(result: tuple) -> object:
    """cuda-python calls return (error, *values): raise on error, return the value(s)."""
    err, *values = result
    if int(err) != 0:
        raise SpermEdgeError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def rebuild_command(bundle: str | Path = "BUNDLE") -> str:
    """The command that builds a bundle's engines on this machine (the flag is --trt)."""
    bundle = Path(bundle)
    return f"sperm-edge export {bundle} --out {bundle.parent / (bundle.name + '-trt')} --trt [--fp16]"


def engine_mismatch(info: dict, tensorrt_version: str, gpu_capability: str | None) -> str | None:
    """Why the manifest's engine `info` cannot run with this TensorRT and GPU; None when it can.

    An engine runs only on the TensorRT release (major.minor) and the GPU compute capability it was built for."""
    name = info.get("file", "engine")
    built = str(info.get("tensorrt", ""))
    if built and built.split(".")[:2] != tensorrt_version.split(".")[:2]:
        return f"engine {name} was built with TensorRT {built}, this machine has {tensorrt_version}"
    wanted = str(info.get("compute_capability", ""))
    if wanted and gpu_capability and wanted != gpu_capability:
        return f"engine {name} was built for GPU compute capability {wanted}, this GPU is {gpu_capability}"
    return None


def compute_capability(device: int = 0) -> str:
    """The GPU's compute capability as 'major.minor'."""
    cudart = _import_cudart()
    props = _check(cudart.cudaGetDeviceProperties(device))
    return f"{props.major}.{props.minor}"


class TensorRTBackend(Backend):
    """A serialized TensorRT engine with a dynamic batch axis (optimization profile 0)."""

    name = "trt"

    def __init__(
        self, engine_path: str | Path, precision: str = "fp32", info: dict | None = None, device: int = 0
    ) -> None:
        super().__init__(precision)
        self.engine_path = Path(engine_path)
        self.info = info or {}
        self.device = device
        self._engine = self._context = self._stream = None
        self._buffers: dict[str, int] = {}
        self._input = ""
        self._out_dtypes: dict[str, np.dtype] = {}
        self._max_batch = int(self.info.get("max_batch") or 1)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            _import_tensorrt()
            _import_cudart()
        except SpermEdgeError as err:
            return False, str(err)
        return True, ""

    @staticmethod
    def matching(engines: list[dict], device: int = 0) -> tuple[list[dict], list[str]]:
        """The engines this machine's TensorRT and GPU can run, and why each other one cannot."""
        version = _import_tensorrt().__version__
        here = compute_capability(device)
        ok, why = [], []
        for engine in engines:
            reason = engine_mismatch(engine, version, here)
            if reason:
                why.append(reason)
            else:
                ok.append(engine)
        return ok, why

    def check_compatible(self) -> None:
        """Refuse an engine built for another TensorRT version or GPU, saying how to rebuild it here."""
        reason = engine_mismatch(self.info, _import_tensorrt().__version__, compute_capability(self.device))
        if reason:
            raise SpermEdgeError(f"{reason}: rebuild it here ({rebuild_command(self.engine_path.parent)})")

    def _activate_impl(self) -> InputSpec:
        trt = _import_tensorrt()
        cudart = _import_cudart()
        self.check_compatible()
        _check(cudart.cudaSetDevice(self.device))
        # the stream first, then the buffers: whatever step fails below, everything made so far is freed
        self._stream = _check(cudart.cudaStreamCreate())
        try:
            return self._load(trt, cudart)
        except BaseException:
            self._deactivate_impl()
            raise

    def _load(self, trt, cudart) -> InputSpec:
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise SpermEdgeError(
                f"TensorRT could not deserialize {self.engine_path} (corrupt or incompatible): "
                f"rebuild it here ({rebuild_command(self.engine_path.parent)})"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise SpermEdgeError(f"engine {self.engine_path.name} must have one input and outputs, has {names}")
        self._input = inputs[0]
        self.output_names = tuple(outputs)
        in_shape = tuple(engine.get_tensor_shape(self._input))
        if in_shape[0] == -1:
            _min, _opt, max_shape = engine.get_tensor_profile_shape(self._input, 0)
            self._max_batch = int(max_shape[0])
        else:
            self._max_batch = int(in_shape[0])
        self._out_dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in outputs}
        context = engine.create_execution_context()
        per_item_in = int(np.prod(in_shape[1:])) * 4
        sizes = {self._input: per_item_in}
        for name in outputs:
            sizes[name] = int(np.prod(tuple(engine.get_tensor_shape(name))[1:])) * self._out_dtypes[name].itemsize
        for name, size in sizes.items():
            self._buffers[name] = _check(cudart.cudaMalloc(size * self._max_batch))  # kept at once: freed on failure
        for name, ptr in self._buffers.items():
            context.set_tensor_address(name, int(ptr))
        self._engine, self._context = engine, context
        log.info("trt: %s, inputs %s, max batch %d", self.engine_path.name, in_shape, self._max_batch)
        return InputSpec(self._input, (-1, *in_shape[1:]), "float32", max_batch=self._max_batch)

    def _deactivate_impl(self) -> None:
        cudart = _import_cudart()
        for ptr in self._buffers.values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._context = self._engine = self._stream = None

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        cudart = _import_cudart()
        kind = cudart.cudaMemcpyKind
        context = self._context
        context.set_input_shape(self._input, tuple(batch.shape))
        outs = {n: np.empty(tuple(context.get_tensor_shape(n)), dtype=d) for n, d in self._out_dtypes.items()}
        _check(
            cudart.cudaMemcpyAsync(
                self._buffers[self._input], batch.ctypes.data, batch.nbytes, kind.cudaMemcpyHostToDevice, self._stream
            )
        )
        if not context.execute_async_v3(int(self._stream)):
            raise SpermEdgeError(f"TensorRT execution of {self.engine_path.name} failed")
        for name, out in outs.items():
            _check(
                cudart.cudaMemcpyAsync(
                    out.ctypes.data, self._buffers[name], out.nbytes, kind.cudaMemcpyDeviceToHost, self._stream
                )
            )
        _check(cudart.cudaStreamSynchronize(self._stream))
        return Outputs.from_named({n: out.astype(np.float32, copy=False) for n, out in outs.items()})

    def describe(self) -> dict:
        return {**super().describe(), "engine": self.engine_path.name, "max_batch": self._max_batch}
