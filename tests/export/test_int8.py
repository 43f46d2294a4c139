"""INT8: the Q/DQ properties TensorRT needs, the accuracy gate, and the INT8 options."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sperm_edge.bundle import load_bundle
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.bundle_writer import BundleWriter
from sperm_edge.export.gate import check_drop, score
from sperm_edge.export.int8 import ImageCalibrationReader, Int8Config, resolve_keep_float
from sperm_edge.export.qdq_check import check_tensorrt_qdq
from sperm_edge.preprocess import PreprocessSpec


def test_every_qdq_is_signed_symmetric_and_weights_are_per_channel(tiny_bundle) -> None:
    graph = onnx.load(str(tiny_bundle / "model.int8.onnx")).graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    qdq = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 50
    for node in qdq:
        zero = consts[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), node.name
    convs = [node for node in graph.node if node.op_type in ("Conv", "Gemm")]
    kept_float = load_bundle(tiny_bundle).manifest["models"]["int8"]["quantization"]["keep_float"]
    assert kept_float == []  # Lite0's default, chosen on validation splits: every layer quantized
    for node in convs:
        dq = producers[node.input[1]]
        assert dq.op_type == "DequantizeLinear", node.name
        weight, scale = consts[dq.input[0]], consts[dq.input[1]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        assert weight.dtype == np.int8 and weight.min() >= -127
        assert scale.ndim == 1 and scale.size == weight.shape[axis], node.name
    assert check_tensorrt_qdq(tiny_bundle / "model.int8.onnx").ok


def test_the_check_flags_what_tensorrt_refuses(tiny_bundle, tmp_path) -> None:
    model = onnx.load(str(tiny_bundle / "model.int8.onnx"))
    zero_points = {n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for init in model.graph.initializer:
        if init.name in zero_points:
            init.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.uint8), init.name))
            break
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    report = check_tensorrt_qdq(path)
    assert not report.ok
    assert any("uint8" in problem for problem in report.problems)


def test_gate_refuses_a_planted_collapse_and_passes_a_gain() -> None:
    labels = [0, 1, 2] * 10
    fp32 = np.eye(3)[labels] * 5.0
    collapsed = np.tile([5.0, 0.0, 0.0], (30, 1))  # a broken quantization: one class for everything
    fp32_score = score("fp32", fp32, labels, ["a", "b", "c"])
    bad = score("int8", collapsed, labels, ["a", "b", "c"], fp32_logits=fp32)
    assert fp32_score.accuracy == 1.0 and bad.accuracy == pytest.approx(1 / 3)
    assert bad.top1_agreement_fp32 == pytest.approx(1 / 3)
    gate = check_drop("int8", fp32_score.accuracy, bad.accuracy, max_drop=1.0)
    assert not gate.passed and not gate.allowed
    assert gate.drop_points == pytest.approx(66.666667)
    assert "exceeds" in gate.message
    assert check_drop("int8", 0.80, 0.795, max_drop=1.0).passed  # 0.5 points
    assert check_drop("int8", 0.80, 0.85).passed
    assert check_drop("int8", 0.9, 0.5, allow=True).allowed
    # the same accuracy on a small validation split, but 5% of the images answered otherwise than FP32
    lucky = check_drop("int8", 0.885, 0.885, max_drop=1.0, agreement=0.95)
    assert not lucky.passed and lucky.min_agreement == 0.98 and "agreement 0.9500 below 0.98" in lucky.message
    assert check_drop("int8", 0.885, 0.880, max_drop=1.0, agreement=0.985).passed
    assert check_drop("int8", 0.885, 0.880, max_drop=2.0, agreement=0.965).passed
    assert not check_drop("int8", 0.9, 0.5, agreement=1.0).passed
    with pytest.raises(SpermEdgeError, match="max-drop"):
        check_drop("int8", 0.9, 0.5, max_drop=-1)


def _writer_with_int8(tmp_path, gates: dict[str, bool]) -> BundleWriter:
    meta = {"arch": "x", "classes": ["a", "b"], "preprocess": {"img_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}}
    writer = BundleWriter(tmp_path, meta)
    for precision, passed in gates.items():
        name = {"int8": "model.int8.onnx", "int8_cpu": "model.int8_cpu.onnx"}[precision]
        writer.path(name).write_bytes(b"x")
        gate = check_drop(precision, 0.9, 0.9 if passed else 0.5).describe()
        writer.set_model(precision, name, accuracy={"accuracy": gate["accuracy"]}, gate=gate)
    return writer


def test_a_refused_int8_takes_the_cpu_variant_with_it(tmp_path) -> None:
    from sperm_edge.export._stages import Stages

    writer = _writer_with_int8(tmp_path, {"int8": False, "int8_cpu": True})
    stages = Stages(writer, tmp_path, PreprocessSpec(32, (0.5,) * 3, (0.5,) * 3), ["a", "b"], None, None)
    stages._decide("int8")
    stages._decide("int8_cpu")
    assert writer.manifest["models"] == {}
    assert not any(tmp_path.glob("model.int8*"))
    reasons = {r["precision"]: r["reason"] for r in writer.manifest["rejected"]}
    assert "accuracy drop 40.00 points" in reasons["int8"]
    assert "refused" in reasons["int8_cpu"]


def test_keep_float_resolves_op_types_and_names(tiny_bundle) -> None:
    path = tiny_bundle / "model.onnx"
    nodes = resolve_keep_float(path, ["Sigmoid"])
    assert len(nodes) == 2  # CBAM's channel and spatial gates
    first_conv = next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
    assert resolve_keep_float(path, [first_conv]) == [first_conv]
    with pytest.raises(SpermEdgeError, match="Softplus"):
        resolve_keep_float(path, ["Softplus"])


def test_int8_config_refuses_unknown_methods() -> None:
    with pytest.raises(SpermEdgeError, match="minmax, entropy, percentile"):
        Int8Config(method="kl")


def test_calibration_reader_batches_and_honours_ranges() -> None:
    spec = PreprocessSpec(16, (0.5,) * 3, (0.5,) * 3)
    images = [np.full((20, 24, 3), i, np.uint8) for i in range(10)]
    reader = ImageCalibrationReader(images, spec, "input", batch=4)
    assert len(reader) == 3
    shapes = [batch["input"].shape[0] for batch in iter(reader.get_next, None)]
    assert shapes == [4, 4, 2]
    reader.set_range(1, 2)
    assert [b["input"].shape[0] for b in iter(reader.get_next, None)] == [4]


def test_keep_float_takes_globs_over_node_names(tiny_bundle) -> None:
    path = tiny_bundle / "model.onnx"
    early = resolve_keep_float(path, ["*conv_stem*", "*blocks.0/*"])
    assert early and all("conv_stem" in name or "blocks.0/" in name for name in early)
    with pytest.raises(SpermEdgeError, match=r"\*nothing\*"):
        resolve_keep_float(path, ["*nothing*"])


def test_layers_kept_in_float_keep_float_weights(tiny_bundle, tmp_path) -> None:
    """What `--keep-float` promises (the B0 models' default): those convolutions are not quantized."""
    import fnmatch

    from sperm_edge.export.int8 import prepare_for_quantization, quantize_int8
    from sperm_edge.model.registry import EFFICIENTNET_KEEP_FLOAT

    bundle = load_bundle(tiny_bundle)
    prepared = prepare_for_quantization(tiny_bundle / "model.onnx", tmp_path / "pre.onnx")
    images = [np.full((40, 40, 3), 40 * i, np.uint8) for i in range(6)]
    config = Int8Config(keep_float=EFFICIENTNET_KEEP_FLOAT)
    result = quantize_int8(prepared, tmp_path / "int8.onnx", images, bundle.card.preprocess, "int8", config)
    graph = onnx.load(str(result.path)).graph
    consts = {init.name for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    kept = [n for n in convs if any(fnmatch.fnmatch(n.name, glob) for glob in EFFICIENTNET_KEEP_FLOAT)]
    assert kept and len(kept) < len(convs) and len(result.excluded_nodes) >= len(kept)
    assert all(node.input[1] in consts for node in kept)  # a plain float initializer, no DequantizeLinear
