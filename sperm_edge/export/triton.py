"""A bundle as a model in an NVIDIA Triton Inference Server model repository.

Layout, after Triton's model repository and model configuration documentation::

    REPO/NAME/config.pbtxt        the onnxruntime backend's configuration (inputs, outputs, batching, instances)
    REPO/NAME/1/model.onnx        the bundle's ONNX model (FP32, or the INT8 Q/DQ one with precision="int8")
    REPO/NAME/sperm-edge/         a client's bundle: the manifest and drift model, without the model files
    REPO/NAME_trt/...             with an engine in the bundle: the same model as a `tensorrt_plan`

Triton reads only `config.pbtxt` and the numbered version folders, so the `sperm-edge/` folder travels with the
model without being served. The shapes come from the ONNX model itself (batch axis left to `max_batch_size`).
torch-free: it needs ONNX Runtime only to read the model's input and output shapes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from sperm_edge.bundle import MANIFEST, TRITON_CLIENT, Bundle
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_bytes

TRITON_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int64)": "TYPE_INT64"}


@dataclass(frozen=True)
class TritonOptions:
    name: str = "sperm_edge"
    precision: str = "fp32"  # which of the bundle's ONNX models the repository serves
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16, 32)  # those up to max_batch_size
    max_queue_delay_us: int = 2000  # how long a request waits for others to batch with
    instances: int = 1
    kind: str = "KIND_GPU"  # KIND_GPU on a GPU server; KIND_CPU where Triton runs on CPUs
    backend: str = "onnxruntime"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch axis


def onnx_tensors(model: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's inputs and outputs as Triton declares them: the first (batch) axis left out."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def spec(arg) -> TensorSpec:
        if arg.type not in TRITON_TYPES:
            raise SpermEdgeError(f"{model}: {arg.name} has type {arg.type}, which this export does not map")
        dims = tuple(d if isinstance(d, int) else -1 for d in arg.shape[1:])
        return TensorSpec(arg.name, TRITON_TYPES[arg.type], dims)

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def model_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], options: TritonOptions) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig)."""
    if options.max_batch_size < 1:
        raise SpermEdgeError("the Triton model needs max_batch_size >= 1 (the bundle's models take a batch axis)")
    preferred = [b for b in options.preferred_batch_sizes if b <= options.max_batch_size] or [options.max_batch_size]

    def tensors(kind: str, specs: list[TensorSpec]) -> str:
        entries = [
            f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ {", ".join(map(str, t.dims))} ]'
            "\n  }"
            for t in specs
        ]
        return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"

    lines = [f'name: "{name}"\n', f'backend: "{options.backend}"\n', f"max_batch_size: {options.max_batch_size}\n"]
    lines += [tensors("input", inputs), tensors("output", outputs)]
    lines.append(
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: {options.max_queue_delay_us}\n"
        "}\n"
    )
    lines.append(f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {options.kind}\n  }}\n]\n")
    return "".join(lines)


def write_model_repository(bundle: Bundle, repo: Path, options: TritonOptions = TritonOptions()) -> Path:
    """Write `repo/NAME` for `bundle` (and `repo/NAME_trt` where the bundle holds a TensorRT engine); return the
    model folder. An existing model folder of that name is replaced whole, through a temporary folder."""
    if not options.name.replace("_", "").replace("-", "").isalnum():
        raise SpermEdgeError(f"Triton model name {options.name!r}: use letters, digits, '_' and '-' only")
    onnx = bundle.onnx_path(options.precision)
    inputs, outputs = onnx_tensors(onnx)
    folder = _write_model(repo, options.name, onnx, "model.onnx", model_config(options.name, inputs, outputs, options))
    _copy_client_files(bundle, folder)
    engines = bundle.manifest.get("engines", [])
    if engines:  # the first engine: Triton's TensorRT backend serves a plan built for its GPU and TensorRT
        name = f"{options.name}_trt"
        config = model_config(name, inputs, outputs, replace(options, name=name, backend="tensorrt"))
        _copy_client_files(bundle, _write_model(repo, name, bundle.file(engines[0]["file"]), "model.plan", config))
    return folder


def _write_model(repo: Path, name: str, model: Path, filename: str, config: str) -> Path:
    folder = repo / name
    partial = repo / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "1").mkdir(parents=True)
    shutil.copyfile(model, partial / "1" / filename)
    atomic_write_bytes(partial / "config.pbtxt", config.encode())
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


def _copy_client_files(bundle: Bundle, folder: Path) -> None:
    """A client's bundle beside the model: the manifest (classes, preprocessing, temperature, framing, drift) with
    the files it lists narrowed to those copied (the drift model), so `sperm-edge run REPO/NAME --backend
    triton://...` loads and verifies it like a bundle that keeps its model on the server."""
    client = folder / TRITON_CLIENT
    client.mkdir(exist_ok=True)
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("checkpoint", "benchmarks")}
    manifest |= {"models": {}, "engines": [], "served_by": {"triton_model": folder.name}}
    drift = (bundle.manifest.get("drift") or {}).get("file")
    kept = [drift] if drift else []
    for name in kept:
        shutil.copyfile(bundle.file(name), client / name)
    manifest["files"] = {name: bundle.manifest["files"][name] for name in kept}
    atomic_write_bytes(client / MANIFEST, json.dumps(manifest, indent=2).encode())
