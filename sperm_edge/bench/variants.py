"""Which backend and precision variants a benchmark measures, and whether each can run on this machine.

A variant is a backend (engine) plus a precision plus the bundle file it runs. `plan_variants`
lists every variant the issue asks for — PyTorch eager and channels_last, ONNX Runtime CPU at each
precision the bundle holds, ONNX Runtime CUDA and TensorRT EP, native TensorRT engines — and gives
each a status: "ok" (will be measured) or "unavailable" with the reason (no GPU, TensorRT missing,
ONNX Runtime without the provider, no such model in the bundle). `open_runner` builds the backend
for a variant with the runtime's `open_backend`, so the benchmark measures the code the runtime runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sperm_edge.bundle import Bundle
from sperm_edge.engines.base import Outputs
from sperm_edge.engines.triton import is_triton
from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)

TTA = "+tta"  # a backend name ending in it runs with dihedral test-time augmentation (8 views per crop)
BACKENDS = ("torch-eager", "torch-channels-last", "ort-cpu", f"ort-cpu{TTA}", "ort-cuda", "ort-trt", "trt")
REFERENCE = ("torch-eager", "fp32")  # the paper-style row every speed-up is a ratio to (at batch 1)
GPU_BACKENDS = frozenset({"ort-cuda", "ort-trt", "trt"})
# The runtime's names (`sperm-edge run --backend`) where they differ; its `torch` backend is channels_last.
RUNTIME_NAMES = {"torch-eager": "torch", "torch-channels-last": "torch", f"ort-cpu{TTA}": "ort-cpu"}


class Runner(Protocol):
    """What the harness needs of a backend: a context manager with `infer(N x C x H x W) -> Outputs`."""

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...

    def infer(self, batch: np.ndarray) -> Outputs: ...


@dataclass(frozen=True)
class Variant:
    """One measured configuration: engine, precision and the bundle file it runs (None: nothing to load)."""

    backend: str
    precision: str
    file: str | None

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.precision}"

    @property
    def is_reference(self) -> bool:
        return (self.backend, self.precision) == REFERENCE


@dataclass
class PlannedVariant:
    """A variant and whether it can run here: status "ok" or "unavailable", with the reason."""

    variant: Variant
    status: str
    reason: str = ""


def parse_backends(text: str | None) -> list[str]:
    """`"ort-cpu,torch-eager"` -> names, checked against BACKENDS (or a Triton server's model, triton://HOST:PORT/NAME);
    None or "all" -> every backend."""
    if text is None or text.strip() in ("", "all"):
        return list(BACKENDS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS and not is_triton(n)]
    if unknown:
        choices = f"{', '.join(BACKENDS)}, triton://HOST:PORT/MODEL"
        raise SpermEdgeError(f"unknown backend(s) {', '.join(unknown)}; choose from: {choices}")
    return names


def has_gpu() -> bool:
    """Whether an NVIDIA GPU is visible (`hardware.gpus`: nvidia-smi, the Jetson release, the CUDA driver)."""
    from sperm_edge.hardware import gpus

    return bool(gpus())


def plan_variants(bundle: Bundle, backends: list[str]) -> list[PlannedVariant]:
    """Every variant of the chosen backends with its status; the reference variant first when chosen.

    Availability is the runtime's (`sperm_edge.engines.availability`); "no GPU" and a
    model missing from the bundle are added to the reason, so a row says everything that is missing.
    """
    from sperm_edge.engines import availability

    models = bundle.manifest.get("models", {})
    weights = bundle.manifest.get("checkpoint", {}).get("weights")
    gpu = has_gpu() if any(b in GPU_BACKENDS for b in backends) else False
    planned: list[PlannedVariant] = []

    def add(variant: Variant, *reasons: str) -> None:
        if variant.backend in GPU_BACKENDS and not gpu:
            reasons = ("no GPU (nvidia-smi, the Jetson release and the CUDA driver find none)", *reasons)
        ok, why = availability(RUNTIME_NAMES.get(variant.backend, variant.backend))
        why = "; ".join(r for r in (*reasons, "" if ok else why) if r)
        planned.append(PlannedVariant(variant, "unavailable" if why else "ok", why))

    def add_onnx(backend: str, precision: str, model: str) -> None:
        entry = models.get(model)
        if entry is None:
            hint = f"export it with --{model.split('_')[0]}"
            add(Variant(backend, precision, None), f"bundle has no {model} ONNX model ({hint})")
        else:
            add(Variant(backend, precision, entry["file"]))

    for backend in backends:
        if is_triton(backend):  # the server runs the model it was given: nothing of the bundle's is loaded here
            add(Variant(backend, "fp32", None))
        elif backend in ("torch-eager", "torch-channels-last"):
            add(Variant(backend, "fp32", weights), "" if weights else "bundle retains no PyTorch checkpoint")
        elif backend == "ort-cpu":
            for precision in ["fp32", "int8", *(p for p in models if p not in ("fp32", "int8"))]:
                add_onnx(backend, precision, precision)
        elif backend in ("ort-cuda", f"ort-cpu{TTA}"):
            add_onnx(backend, "fp32", "fp32")
        elif backend == "ort-trt":
            add_onnx(backend, "fp16", "fp32")  # TensorRT builds FP16 from the FP32 model
            add_onnx(backend, "int8", "int8")
        elif backend == "trt":
            engines = bundle.manifest.get("engines", [])
            for engine in engines:
                add(Variant(backend, engine["precision"], engine["file"]))
            if not engines:
                no_engine = "bundle has no TensorRT engine (build it on the target: sperm-edge export --trt --fp16)"
                for precision in ("fp16", "int8"):
                    add(Variant(backend, precision, None), no_engine)
    planned.sort(key=lambda p: not p.variant.is_reference)
    return planned


def open_runner(bundle: Bundle, variant: Variant, threads: int) -> Runner:
    """The (not yet entered) backend that runs `variant`: enter it with `with` to load the model.

    Everything but the NCHW reference comes from the runtime's `open_backend`, so the benchmark
    measures the code the runtime runs.
    """
    if variant.backend == "torch-eager":
        from sperm_edge.bench.eager import EagerTorchBackend

        return EagerTorchBackend(bundle.checkpoint_stem(), threads=threads)
    from sperm_edge.engines import open_backend

    name = RUNTIME_NAMES.get(variant.backend, variant.backend)
    precision = None if name == "torch" else variant.precision
    return open_backend(bundle, name, precision, threads, tta=variant.backend.endswith(TTA))


def model_size_mb(bundle: Bundle, variant: Variant) -> float | None:
    """Size of the file the variant loads, in MB (10^6 bytes)."""
    if variant.file is None:
        return None
    entry = bundle.manifest.get("files", {}).get(variant.file)
    size = entry["size"] if entry else (bundle.path / variant.file).stat().st_size
    return round(size / 1e6, 2)
