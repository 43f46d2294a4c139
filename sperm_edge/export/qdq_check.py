"""Does a Q/DQ model meet TensorRT's explicit-quantization rules?

TensorRT builds Q/DQ networks only from signed INT8 with zero point 0 (symmetric), weights in
[-127, 127], and it has no INT32 quantized type (so biases must stay float). Per-channel weight
scales (an `axis` and one scale per output channel) are what keeps accuracy after PTQ. This check
reads the ONNX file and lists every violation; an empty list means TensorRT-ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class QdqReport:
    """Counts and the list of problems (empty when the model is fit for TensorRT)."""

    quantize: int = 0
    dequantize: int = 0
    per_channel_weights: int = 0
    per_tensor_weights: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.quantize + self.dequantize > 0

    def describe(self) -> dict:
        return {
            "quantize_linear": self.quantize,
            "dequantize_linear": self.dequantize,
            "per_channel_weights": self.per_channel_weights,
            "per_tensor_weights": self.per_tensor_weights,
            "tensorrt_ready": self.ok,
            "problems": self.problems[:20],
        }


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def check_tensorrt_qdq(path: str | Path, require_per_channel: bool = True) -> QdqReport:
    """Inspect every QuantizeLinear/DequantizeLinear of the model at `path`."""
    graph = onnx.load(str(path)).graph
    consts = _constants(graph)
    report = QdqReport()
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        if node.op_type == "QuantizeLinear":
            report.quantize += 1
        else:
            report.dequantize += 1
        label = f"{node.op_type} {node.name or node.output[0]}"
        if len(node.input) < 3 or not node.input[2]:
            report.problems.append(f"{label}: no zero point (defaults to uint8)")
            continue
        zero = consts.get(node.input[2])
        if zero is None:
            report.problems.append(f"{label}: zero point is not a constant")
            continue
        if zero.dtype != np.int8:
            report.problems.append(f"{label}: {zero.dtype} quantization; TensorRT needs int8")
        elif np.any(zero != 0):
            report.problems.append(f"{label}: zero point {zero.ravel()[:4].tolist()} is not 0 (asymmetric)")
        data = consts.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and data.dtype == np.int8 and (data == -128).any():
            report.problems.append(f"{label}: weights use -128; TensorRT wants [-127, 127]")
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        weight_dq = producers.get(node.input[1])
        if weight_dq is None or weight_dq.op_type != "DequantizeLinear":
            continue  # weight left in float (excluded node or unquantized op)
        scale = consts.get(weight_dq.input[1])
        weight = consts.get(weight_dq.input[0])
        axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), None)
        channels = weight.shape[axis] if weight is not None and axis is not None and axis < weight.ndim else None
        if scale is not None and scale.ndim == 1 and channels is not None and scale.size == channels:
            report.per_channel_weights += 1
        else:
            report.per_tensor_weights += 1
            if require_per_channel:
                report.problems.append(f"{node.op_type} {node.name}: weights quantized per tensor, not per channel")
    return report
