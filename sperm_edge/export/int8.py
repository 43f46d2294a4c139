"""FP32 ONNX -> INT8 Q/DQ ONNX by static post-training quantization with ONNX Runtime's tools.

Wraps `onnxruntime.quantization` (quant_pre_process, quantize_static, CalibrationDataReader) and
calibrates on real images run through the shared preprocessing. Two variants:

- `int8`: what TensorRT's explicit quantization accepts — signed INT8 activations and weights
  (QInt8), symmetric (zero point 0), per-channel weights, biases left in float (TensorRT has no
  INT32 Q/DQ), a dedicated Q/DQ pair per consumer.
- `int8_cpu`: ONNX Runtime CPU's fast path — unsigned activations (U8S8, asymmetric), INT32
  biases. ORT runs signed activations through slow fallbacks on x86 (see DESIGN.md), so this one
  is for the CPU only.

Both quantize the same pre-processed graph and share one calibration pass (ORT's calibration cache).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch

log = logging.getLogger(__name__)

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


@dataclass(frozen=True)
class Variant:
    """How one INT8 flavour is quantized."""

    name: str
    activation_type: QuantType
    symmetric_activations: bool
    quantize_bias: bool
    dedicated_qdq_pair: bool
    target: str


VARIANTS = {
    "int8": Variant("int8", QuantType.QInt8, True, False, True, "tensorrt (explicit quantization) and any ORT"),
    "int8_cpu": Variant("int8_cpu", QuantType.QUInt8, False, True, False, "ONNX Runtime CPU only"),
}


@dataclass
class Int8Config:
    """User choices for the INT8 step."""

    method: str = "minmax"
    keep_float: tuple[str, ...] = ()  # op types (e.g. Sigmoid, Mul) or node names left in float
    percentile: float = 99.999
    calib_batch: int = 8
    per_channel: bool = True  # weights: one scale per output channel (False: one per tensor)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SpermEdgeError(f"unknown calibration method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0 < self.percentile <= 100:
            raise SpermEdgeError(f"calibration percentile must be in (0, 100], not {self.percentile}")


@dataclass
class Int8Result:
    """A quantized model and how it was made."""

    path: Path
    variant: Variant
    config: Int8Config
    calibration_images: int
    excluded_nodes: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def describe(self) -> dict:
        v = self.variant
        return {
            "tool": f"onnxruntime.quantization {onnxruntime.__version__} (quantize_static)",
            "format": "QDQ",
            "target": v.target,
            "activations": f"{'int8' if v.activation_type == QuantType.QInt8 else 'uint8'} "
            f"{'symmetric (zero point 0)' if v.symmetric_activations else 'asymmetric'} per-tensor",
            "weights": f"int8 symmetric (zero point 0) per-{'channel' if self.config.per_channel else 'tensor'}",
            "bias": "int32 Q/DQ" if v.quantize_bias else "float",
            "calibration_method": self.config.method,
            **({"percentile": self.config.percentile} if self.config.method == "percentile" else {}),
            "calibration_images": self.calibration_images,
            "keep_float": list(self.config.keep_float),
            "excluded_nodes": len(self.excluded_nodes),
            "quantize_linear": self.op_counts.get("QuantizeLinear", 0),
            "dequantize_linear": self.op_counts.get("DequantizeLinear", 0),
            "seconds": self.seconds,
        }


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed real images in batches; `set_range` lets ORT calibrate chunk by chunk."""

    def __init__(self, images: Sequence[np.ndarray], spec: PreprocessSpec, input_name: str, batch: int = 8) -> None:
        self.images, self.spec, self.input_name, self.batch = images, spec, input_name, max(1, batch)
        self.start, self.end = 0, len(self)
        self.position = 0

    def __len__(self) -> int:
        return (len(self.images) + self.batch - 1) // self.batch

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self))
        self.position = start_index

    def get_next(self) -> dict | None:
        if self.position >= self.end:
            return None
        first = self.position * self.batch
        self.position += 1
        return {self.input_name: preprocess_batch(self.images[first : first + self.batch], self.spec)}


@contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """ORT's quantizer logs progress through the root logger (one line per bias copy); keep warnings only."""
    root = logging.getLogger()

    def only_warnings(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    root.addFilter(only_warnings)
    try:
        yield
    finally:
        root.removeFilter(only_warnings)


def prepare_for_quantization(fp32_path: str | Path, out_path: str | Path) -> Path:
    """ORT's recommended pre-processing: symbolic shape inference plus graph optimisation (folds pads, BN)."""
    out_path = Path(out_path)
    try:
        with _quiet_ort_logging():
            quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=False)
    except Exception as err:  # shape inference raises plain Exceptions on graphs it cannot follow
        raise SpermEdgeError(f"ONNX Runtime's quant_pre_process failed on {Path(fp32_path).name}: {err}") from err
    return out_path


def resolve_keep_float(model_path: str | Path, keep_float: Sequence[str]) -> list[str]:
    """Names of the nodes to leave in float.

    Each entry is an op type (`Sigmoid`: every Sigmoid node), a node name, or a glob over node
    names (`*blocks.0/*`). Measured on Lite0+CBAM (HuSHeM, SMIDS): keeping the stem and the first
    block in float (`*conv_stem*,*blocks.0/*`, 4 nodes) lifts INT8 top-1 agreement with FP32 from
    70-78% to 97%: the first ReLU6 feature maps are small next to their 0-6 range and lose most of
    their levels to per-tensor symmetric INT8. Keeping CBAM (Sigmoid, Mul) or the depthwise convs
    in float did not help.
    """
    if not keep_float:
        return []
    graph = onnx.load(str(model_path), load_external_data=False).graph
    by_type = Counter(node.op_type for node in graph.node)
    names = [node.name for node in graph.node]
    wanted: set[str] = set()
    unknown = []
    for entry in keep_float:
        if entry in by_type:
            wanted.update(node.name for node in graph.node if node.op_type == entry)
        elif any(ch in entry for ch in "*?[") and fnmatch.filter(names, entry):
            wanted.update(fnmatch.filter(names, entry))
        elif entry in names:
            wanted.add(entry)
        else:
            unknown.append(entry)
    if unknown:
        raise SpermEdgeError(
            f"--keep-float names {', '.join(unknown)}, which match no node of the model; its op types: "
            f"{', '.join(sorted(by_type))} (node names can be given exactly or as globs, e.g. '*blocks.1/*')"
        )
    return [name for name in names if name in wanted]


def cam_only_nodes(model_path: str | Path, output: str = "cam") -> list[str]:
    """Nodes that only the `output` branch needs (the Grad-CAM++ closed form): INT8 export leaves them in float.

    The branch is a few element-wise ops and one small MatMul on the explained feature map, so
    float costs nothing measurable, while per-tensor INT8 of its tiny weights (g^2 ~ 1e-8) would
    destroy the maps. Found from the graph, not by node names: the ancestors of `output` that no
    other output needs.
    """
    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}

    def ancestors(tensors: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(tensors)
        while stack:
            node = producer.get(stack.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                stack.extend(node.input)
        return seen

    outputs = [o.name for o in graph.output]
    if output not in outputs:
        return []
    only = ancestors([output]) - ancestors([o for o in outputs if o != output])
    return [node.name for node in graph.node if node.name in only]


def quantize_int8(
    prepared_path: str | Path,
    out_path: str | Path,
    images: Sequence[np.ndarray],
    spec: PreprocessSpec,
    variant: str = "int8",
    config: Int8Config | None = None,
    calibration_cache: str | Path | None = None,
) -> Int8Result:
    """Quantize `prepared_path` (from `prepare_for_quantization`) to `out_path`, calibrating on `images`.

    With `calibration_cache`, the first call saves the calibrated tensor ranges there and later
    calls (the other variant) reuse them instead of running the images again.
    """
    config = config or Int8Config()
    if variant not in VARIANTS:
        raise SpermEdgeError(f"unknown INT8 variant {variant!r}; known: {', '.join(VARIANTS)}")
    if len(images) == 0:
        raise SpermEdgeError("INT8 calibration needs at least one image")
    chosen = VARIANTS[variant]
    start = time.perf_counter()
    input_name = onnx.load(str(prepared_path), load_external_data=False).graph.input[0].name
    excluded = resolve_keep_float(prepared_path, config.keep_float)
    excluded += [name for name in cam_only_nodes(prepared_path) if name not in excluded]
    reader = ImageCalibrationReader(images, spec, input_name, config.calib_batch)
    extra = {
        "ActivationSymmetric": chosen.symmetric_activations,
        "WeightSymmetric": True,
        "QuantizeBias": chosen.quantize_bias,
        "DedicatedQDQPair": chosen.dedicated_qdq_pair,
        "CalibStridedMinMax": 1,  # calibrate batch by batch: bounded memory for histogram methods too
        "CalibPercentile": config.percentile,
    }
    try:
        with _quiet_ort_logging():
            quantize_static(
                str(prepared_path),
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                activation_type=chosen.activation_type,
                weight_type=QuantType.QInt8,
                calibrate_method=METHODS[config.method],
                nodes_to_exclude=excluded,
                extra_options=extra,
                calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            )
    except SpermEdgeError:
        raise
    except Exception as err:  # quantize_static raises ValueError/RuntimeError/ORT errors alike
        raise SpermEdgeError(f"INT8 quantization ({variant}) failed: {err}") from err
    counts = Counter(node.op_type for node in onnx.load(str(out_path)).graph.node)
    seconds = round(time.perf_counter() - start, 2)
    log.info(
        "quantized %s (%s, %s calibration on %d images, %d nodes kept float) in %.1f s",
        Path(out_path).name,
        variant,
        config.method,
        len(images),
        len(excluded),
        seconds,
    )
    return Int8Result(
        path=Path(out_path),
        variant=chosen,
        config=config,
        calibration_images=len(images),
        excluded_nodes=excluded,
        op_counts=dict(counts),
        seconds=seconds,
    )
