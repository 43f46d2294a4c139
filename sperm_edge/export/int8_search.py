"""Accuracy-aware INT8: when the first INT8 model loses too much validation accuracy, look for one that keeps it.

Candidates, in order of cost (each one a full quantization, judged on the validation split):

1. the configured one (calibration method, per-channel weights, the architecture's `keep_float`);
2. the other calibration methods (min-max, entropy, percentile): ranges only, no speed cost;
3. per-tensor weights with the best method so far;
4. the input end of the network kept in float: its first 1, 2, 3, 5 or 8 layers. Their maps are large and
   thin (the stem's ReLU6 output uses a sliver of its range), so per-tensor INT8 loses most there, and
   with few channels they cost little in float: on a HuSHeM CBAM-Lite0 fold whose full INT8 model agreed
   with FP32 on 88% of the training images, the first three layers in float brought it to 100%;
5. the most sensitive layers kept in float: 1, 2, 4, 8, then 16 of them, each step costing speed. A layer's
   sensitivity is the signal-to-quantization-noise ratio (SQNR, dB) its output loses against its input
   when the best model so far runs beside FP32 on calibration images (ONNX Runtime's `qdq_loss_debug`,
   the accumulated-error view of its QDQ debugging tools). A convolution and the ReLU6 that follows it are
   one layer: the convolution's own output is quantized with its activation's range, so on its own it looks
   worse than it is.

A candidate is within the limit when the gate (`export.gate.check_drop`) passes it: validation accuracy
at most `max_drop` points below FP32, and top-1 agreement with FP32 on the validation and calibration
images of at least 1 - 2 * max_drop / 100 (a small validation split alone cannot tell a good candidate from a
lucky one). The search stops at the first candidate within the limit, or when its time budget is spent;
only then does the gate refuse, with every candidate tried listed in the manifest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from sperm_edge.export.gate import DropGate, Score, check_drop
from sperm_edge.export.int8 import METHODS, ImageCalibrationReader, Int8Config, Int8Result, quantize_int8
from sperm_edge.preprocess import PreprocessSpec

PREFIX_COUNTS = (1, 2, 3, 5, 8)  # how many layers from the input end successive candidates keep in float
KEEP_COUNTS = (1, 2, 4, 8, 16)  # how many of the most sensitive layers successive candidates keep in float
SENSITIVITY_IMAGES = 16
# The graph input has no quantization noise of its own to compare with; 8-bit quantization of a full-range
# signal keeps about 6.02 * 8 dB, which is what the first layer is measured against.
INPUT_SQNR_DB = 48.0
FUSED_ACTIVATIONS = {"Relu", "Clip"}


@dataclass(frozen=True)
class Verdict:
    """What the judge measured on a candidate: the validation split's score, and top-1 agreement with FP32 on
    the validation and calibration images together."""

    val: Score
    agreement: float
    agreement_n: int


@dataclass
class Trial:
    """One candidate tried, and how it did on the validation split."""

    config: Int8Config
    verdict: Verdict
    gate: DropGate
    seconds: float
    result: Int8Result

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def describe(self) -> dict:
        return {
            "calibration": self.config.method,
            "per_channel": self.config.per_channel,
            "keep_float": list(self.config.keep_float),
            "val_accuracy": self.verdict.val.accuracy,
            "val_agreement_fp32": self.verdict.val.top1_agreement_fp32,
            "agreement_fp32": self.verdict.agreement,
            "agreement_images": self.verdict.agreement_n,
            "drop_points": self.gate.drop_points,
            "passed": self.passed,
            "seconds": self.seconds,
        }


@dataclass
class SearchOutcome:
    """The candidates tried in order; `chosen` is the first within the limit, else the best on validation."""

    trials: list[Trial]
    stopped: str  # "passed", "exhausted" or "time budget"
    sensitivity: list[tuple[str, float]]

    @property
    def chosen(self) -> Trial:
        passing = [t for t in self.trials if t.passed]
        return passing[0] if passing else max(self.trials, key=_merit)

    @property
    def first(self) -> Trial:
        return self.trials[0]

    def describe(self) -> dict:
        return {
            "stopped": self.stopped,
            "chosen": self.trials.index(self.chosen) + 1,
            "candidates": [t.describe() for t in self.trials],
            "most_sensitive_layers": [{"layer": name, "sqnr_loss_db": round(db, 2)} for name, db in self.sensitivity],
        }


def _merit(trial: Trial) -> tuple[float, float]:
    """How good a candidate is when none passes: validation accuracy, then agreement with FP32."""
    return trial.verdict.val.accuracy, trial.verdict.agreement


def _layers(graph: onnx.GraphProto) -> list[tuple[list[str], str]]:
    """(node names, output tensor) per layer: a node, joined by the ReLU/Clip that alone consumes its output."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    fused: set[str] = set()
    layers = []
    for node in graph.node:
        if node.name in fused or not node.output:
            continue
        after = consumers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type in FUSED_ACTIVATIONS:
            fused.add(after[0].name)
            layers.append(([node.name, after[0].name], after[0].output[0]))
        else:
            layers.append(([node.name], node.output[0]))
    return layers


def layer_sensitivity(
    float_path: Path, qdq_path: Path, images: Sequence[np.ndarray], spec: PreprocessSpec, work: Path
) -> list[tuple[list[str], float]]:
    """Layers (their node names) with the SQNR they lose in dB, most sensitive first."""
    from onnxruntime.quantization import qdq_loss_debug

    work.mkdir(parents=True, exist_ok=True)
    augmented = {}
    for name, path in (("float", float_path), ("qdq", qdq_path)):
        augmented[name] = work / f"{name}.debug.onnx"
        qdq_loss_debug.modify_model_output_intermediate_tensors(str(path), str(augmented[name]))
    graph = onnx.load(str(float_path), load_external_data=False).graph
    input_name = graph.input[0].name
    activations = {
        name: qdq_loss_debug.collect_activations(str(path), ImageCalibrationReader(images, spec, input_name))
        for name, path in augmented.items()
    }
    matched = qdq_loss_debug.create_activation_matching(activations["qdq"], activations["float"])
    errors = qdq_loss_debug.compute_activation_error(matched)
    sqnr = {tensor: e["xmodel_err"] for tensor, e in errors.items() if math.isfinite(e.get("xmodel_err", math.nan))}
    inputs = {i.name for i in graph.input}
    producer_input = {node.name: [t for t in node.input if t in sqnr or t in inputs] for node in graph.node}
    ranked = []
    for names, output in _layers(graph):
        if output not in sqnr or not producer_input[names[0]]:
            continue
        before = min(sqnr.get(t, INPUT_SQNR_DB) for t in producer_input[names[0]])
        ranked.append((names, before - sqnr[output]))
    return sorted(ranked, key=lambda item: -item[1])


class Int8Search:
    """Tries INT8 candidates for one variant until one keeps validation accuracy within `max_drop` points."""

    def __init__(
        self,
        prepared: Path,
        images: Sequence[np.ndarray],
        spec: PreprocessSpec,
        judge: Callable[[Path], Verdict],
        fp32_accuracy: float,
        max_drop: float,
        work: Path,
        budget_s: float,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.prepared, self.images, self.spec, self.judge = prepared, images, spec, judge
        self.fp32_accuracy, self.max_drop, self.work, self.budget_s = fp32_accuracy, max_drop, work, budget_s
        self.progress = progress
        self.sensitivity: list[tuple[str, float]] = []  # the last run's most sensitive layers, when it got there
        work.mkdir(parents=True, exist_ok=True)

    def _try(self, variant: str, config: Int8Config, trials: list[Trial]) -> Trial:
        start = time.perf_counter()
        self.progress(f"INT8 search ({variant}), candidate {len(trials) + 1}: {describe_config(config)}")
        out = self.work / f"{variant}-{len(trials) + 1}.onnx"
        cache = self.work / f"calibration-{config.method}.json"
        result = quantize_int8(self.prepared, out, self.images, self.spec, variant, config, cache)
        verdict = self.judge(out)
        gate = check_drop(variant, self.fp32_accuracy, verdict.val.accuracy, self.max_drop, agreement=verdict.agreement)
        trial = Trial(config, verdict, gate, round(time.perf_counter() - start, 2), result)
        trials.append(trial)
        return trial

    def _candidates(self, variant: str, first: Int8Config, trials: list[Trial]) -> Iterator[Int8Config]:
        """The ladder; later steps build on the candidates tried so far (appended to `trials` between yields)."""
        yield first
        yield from (replace(first, method=method) for method in METHODS if method != first.method)
        yield replace(max(trials, key=_merit).config, per_channel=False)
        base = max((t for t in trials if t.config.per_channel), key=_merit)
        graph = onnx.load(str(self.prepared), load_external_data=False).graph
        free = [names for names, _ in _layers(graph) if not set(names) & set(base.result.excluded_nodes)]
        for count in PREFIX_COUNTS:
            yield replace(base.config, keep_float=(*base.config.keep_float, *_flat(free[:count])))
        base = max((t for t in trials if t.config.per_channel), key=_merit)
        self.progress(f"INT8 search ({variant}): measuring each layer's quantization loss")
        ranked = layer_sensitivity(
            self.prepared, base.result.path, self.images[:SENSITIVITY_IMAGES], self.spec, self.work / "debug"
        )
        ranked = [(names, db) for names, db in ranked if not set(names) & set(base.result.excluded_nodes)]
        self.sensitivity = [(names[0], db) for names, db in ranked[: max(KEEP_COUNTS)]]
        for count in KEEP_COUNTS:
            layers = [names for names, _ in ranked[:count]]
            yield replace(base.config, keep_float=(*base.config.keep_float, *_flat(layers)))

    def run(self, variant: str, first: Int8Config) -> SearchOutcome:
        """The first candidate always; the others while they miss the limit and time is left."""
        start = time.perf_counter()
        trials: list[Trial] = []
        self.sensitivity = []
        for config in self._candidates(variant, first, trials):
            if any(t.config == config for t in trials):
                continue
            if self._try(variant, config, trials).passed:
                return SearchOutcome(trials, "passed", self.sensitivity)
            if time.perf_counter() - start >= self.budget_s:
                return SearchOutcome(trials, "time budget", self.sensitivity)
        return SearchOutcome(trials, "exhausted", self.sensitivity)


def _flat(layers: list[list[str]]) -> tuple[str, ...]:
    return tuple(name for names in layers for name in names)


def describe_config(config: Int8Config) -> str:
    """One line for progress and refusal messages."""
    weights = "per-channel" if config.per_channel else "per-tensor"
    kept = f", {len(config.keep_float)} patterns in float" if config.keep_float else ""
    return f"{config.method} calibration, {weights} weights{kept}"
