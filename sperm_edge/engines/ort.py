"""ONNX Runtime with the CPU, CUDA or TensorRT execution provider.

The CUDA and TensorRT providers come with the `onnxruntime-gpu` build (same `onnxruntime` module);
the session is refused when the requested provider is missing or ONNX Runtime silently falls back
to another one, so `--backend ort-trt` never measures the CPU by mistake. The engines and timing
cache that the TensorRT provider builds (minutes on a Jetson) are kept in a persisted folder,
`$SPERM_EDGE_CACHE/ort-trt` (else ~/.cache/sperm-edge/ort-trt; a bundle folder may be read-only),
in a subfolder named by TensorRT version and GPU, with the model and precision in the file names:
ONNX Runtime keys its cache on the model, but does not notice a new GPU or TensorRT.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from sperm_edge.engines.base import Backend, InputSpec, Outputs, missing
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import cache_dir

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_GPU_HINT = "install the GPU build: pip uninstall onnxruntime && pip install onnxruntime-gpu (with CUDA 12 and cuDNN 9)"


def available_providers() -> list[str]:
    """ONNX Runtime's providers on this machine; empty when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def ort_trt_cache() -> Path:
    """The TensorRT provider's cache folder for this machine: `ort-trt/trt{version}.sm{XY}` in the cache."""
    from sperm_edge.hardware import cuda_driver_gpu, tensorrt_library_version

    gpu = cuda_driver_gpu()
    sm = gpu[1].replace(".", "") if gpu else "unknown"
    return cache_dir("ort-trt") / f"trt{tensorrt_library_version() or 'unknown'}.sm{sm}"


def default_threads() -> int:
    """Intra-op threads: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def new_session(
    path: str | Path,
    providers: list | None = None,
    threads: int | None = None,
    spin: bool = False,
    name: str = "ort-cpu",
):
    """An ONNX Runtime session as the runtime runs it: the one place sessions are made, so the figures export
    measures (parity, accuracy, drift features, latency) come from the settings the stream runs with.

    All graph optimizations, sequential execution, `threads` intra-op threads (default: the usable cores).
    Idle intra-op workers sleep instead of spinning (`spin` False), leaving the cores to the stream's other
    threads (capture, cell finding): measured 1.7x the frame rate of spinning workers on 2 busy cores. A model
    ONNX Runtime cannot load becomes a SpermEdgeError naming it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise SpermEdgeError(f"ONNX Runtime cannot load {path} on {name}: {err}") from err


class OrtBackend(Backend):
    """An ONNX Runtime session on one provider (`cpu`, `cuda` or `trt`)."""

    def __init__(
        self,
        onnx_path: str | Path,
        provider: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        device_id: int = 0,
        cache_dir: str | Path | None = None,
        spin: bool = False,
    ) -> None:
        if provider not in PROVIDERS:
            raise SpermEdgeError(f"unknown ONNX Runtime provider {provider!r}; choose one of: {', '.join(PROVIDERS)}")
        super().__init__(precision)
        self.name = f"ort-{provider}"
        self.provider = provider
        self.onnx_path = Path(onnx_path)
        self.threads = threads or default_threads()
        self.device_id = device_id
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.spin = spin
        self._session = None
        self._input_name = ""

    @classmethod
    def available_for(cls, provider: str) -> tuple[bool, str]:
        """Whether `provider` can run here; else what to install."""
        providers = available_providers()
        if not providers:
            return False, "onnxruntime is not installed; pip install onnxruntime (CPU) or onnxruntime-gpu"
        if PROVIDERS[provider] not in providers:
            return False, f"ONNX Runtime here has no {PROVIDERS[provider]} (it has {', '.join(providers)}); {_GPU_HINT}"
        return True, ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return cls.available_for("cpu")

    def provider_chain(self) -> list:
        """The provider list handed to InferenceSession, most specific first, each with its options."""
        cuda = ("CUDAExecutionProvider", {"device_id": self.device_id, "cudnn_conv_algo_search": "HEURISTIC"})
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        if self.provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        cache = Path(self.cache_dir) if self.cache_dir else ort_trt_cache()
        cache.mkdir(parents=True, exist_ok=True)
        trt = {
            "device_id": self.device_id,
            "trt_fp16_enable": self.precision == "fp16",
            "trt_int8_enable": self.precision.startswith("int8"),  # Q/DQ networks still need the flag on TRT 10
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_engine_cache_prefix": f"{self.onnx_path.stem}.{self.precision}",
        }
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]

    def _activate_impl(self) -> InputSpec:
        ok, why = self.available_for(self.provider)
        if not ok:
            raise missing(f"ONNX Runtime provider {PROVIDERS.get(self.provider)}", why)
        session = new_session(self.onnx_path, self.provider_chain(), self.threads, self.spin, self.name)
        used = session.get_providers()
        if used[0] != PROVIDERS[self.provider]:
            raise SpermEdgeError(
                f"ONNX Runtime fell back to {used[0]} instead of {PROVIDERS[self.provider]} "
                f"(driver, CUDA or TensorRT libraries missing?); {_GPU_HINT}"
            )
        self._session = session
        inp = session.get_inputs()[0]
        self._input_name = inp.name
        self.output_names = tuple(o.name for o in session.get_outputs())
        shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        log.info("%s: %s on %s, %d threads", self.name, self.onnx_path.name, used[0], self.threads)
        return InputSpec(inp.name, shape, "float32")

    def _deactivate_impl(self) -> None:
        self._session = None

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        values = self._session.run(None, {self._input_name: batch})
        return Outputs.from_named(dict(zip(self.output_names, values, strict=True)))

    def describe(self) -> dict:
        return {**super().describe(), "model": self.onnx_path.name, "threads": self.threads}
