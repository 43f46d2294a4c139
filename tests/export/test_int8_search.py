"""The accuracy-aware INT8 search on a real tiny model: real quantization and real ONNX files each time.

The judge scores what a real candidate file is: whether it keeps any layer in float (fewer
DequantizeLinear nodes than the fully quantized model). That plants "only a model with a float layer
is accurate enough", so the tests see the whole ladder run in order and stop where it should.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.export.gate import Score
from sperm_edge.export.images import folder_images
from sperm_edge.export.int8 import Int8Config, prepare_for_quantization
from sperm_edge.export.int8_search import (
    FUSED_ACTIVATIONS,
    KEEP_COUNTS,
    PREFIX_COUNTS,
    Int8Search,
    Verdict,
    _layers,
    layer_sensitivity,
)


@pytest.fixture(scope="module")
def setting(tiny_bundle, tiny_run, tmp_path_factory):
    """(prepared FP32 model, calibration images, preprocessing) of the tiny run."""
    card = load_bundle(tiny_bundle).card
    work = tmp_path_factory.mktemp("int8-search")
    prepared = prepare_for_quantization(tiny_bundle / "model.onnx", work / "model.pre.onnx")
    images = folder_images(tiny_run.parent / "data", card.classes, need_labels=True).sample(12, 0).images
    return prepared, images, card.preprocess


def _dequantize_count(path: Path) -> int:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)["DequantizeLinear"]


def _search(setting, tmp_path, passes, budget_s: float = 600.0) -> Int8Search:
    prepared, images, spec = setting

    def judge(path: Path) -> Verdict:
        accuracy = 1.0 if passes(path) else 0.0
        val = Score("int8", n=len(images), accuracy=accuracy, macro_f1=accuracy, top1_agreement_fp32=accuracy)
        return Verdict(val, agreement=accuracy, agreement_n=len(images))

    return Int8Search(prepared, images, spec, judge, 1.0, 1.0, tmp_path, budget_s)


def test_the_ladder_runs_in_order_of_cost_and_stops_at_the_first_candidate_within_the_limit(setting, tmp_path) -> None:
    fully_quantized: dict[str, int] = {}

    def keeps_a_float_layer(path: Path) -> bool:
        count = _dequantize_count(path)
        return count < fully_quantized.setdefault("dequantize", count)  # the first candidate quantizes all

    outcome = _search(setting, tmp_path, keeps_a_float_layer).run("int8", Int8Config())
    steps = [(t.config.method, t.config.per_channel, len(t.config.keep_float) > 0) for t in outcome.trials]
    assert steps == [
        ("minmax", True, False),
        ("entropy", True, False),
        ("percentile", True, False),
        ("minmax", False, False),  # per-tensor weights with the best method so far (a tie keeps the first)
        ("minmax", True, True),  # the first layer from the input end in float
    ]
    assert outcome.stopped == "passed" and outcome.chosen is outcome.trials[-1]
    assert [t.passed for t in outcome.trials] == [False] * 4 + [True]
    first_layer, _ = _layers(onnx.load(str(setting[0])).graph)[0]
    assert list(outcome.chosen.config.keep_float) == first_layer and outcome.sensitivity == []
    described = outcome.describe()
    assert described["chosen"] == 5 and described["candidates"][-1]["keep_float"] == first_layer


def test_nothing_within_the_limit_tries_every_candidate_and_keeps_the_best(setting, tmp_path) -> None:
    outcome = _search(setting, tmp_path, lambda path: False).run("int8_cpu", Int8Config(method="entropy"))
    configs = [t.config for t in outcome.trials]
    assert outcome.stopped == "exhausted" and all(a != b for i, a in enumerate(configs) for b in configs[i + 1 :])
    assert [c.method for c in configs[:3]] == ["entropy", "minmax", "percentile"]
    prefixes = [c.keep_float for c in configs[4 : 4 + len(PREFIX_COUNTS)]]
    assert all(longer[: len(shorter)] == shorter for shorter, longer in zip(prefixes, prefixes[1:], strict=False))
    # then the most sensitive layers, up to all of those measured (a set already tried as a prefix is skipped)
    sensitive = [c.keep_float for c in configs[4 + len(PREFIX_COUNTS) :]]
    assert len(sensitive) >= len(KEEP_COUNTS) - 1 and all(
        len(a) < len(b) for a, b in zip(sensitive, sensitive[1:], strict=False)
    )
    assert {name for name, _ in outcome.sensitivity} <= set(sensitive[-1])
    losses = [db for _, db in outcome.sensitivity]
    assert losses == sorted(losses, reverse=True) and len(losses) == max(KEEP_COUNTS)
    assert outcome.chosen is outcome.first  # every candidate scored the same: the cheapest is kept


def test_a_spent_budget_stops_after_the_first_candidate(setting, tmp_path) -> None:
    outcome = _search(setting, tmp_path, lambda path: False, budget_s=0.0).run("int8", Int8Config())
    assert outcome.stopped == "time budget" and len(outcome.trials) == 1


def test_a_convolution_and_its_activation_are_one_layer(setting, tmp_path) -> None:
    prepared, images, spec = setting
    from sperm_edge.export.int8 import quantize_int8

    qdq = quantize_int8(prepared, tmp_path / "q.onnx", images, spec, "int8").path
    ranked = layer_sensitivity(prepared, qdq, images, spec, tmp_path / "debug")
    nodes = {node.name: node for node in onnx.load(str(prepared)).graph.node}
    assert ranked and all(set(names) <= set(nodes) for names, _ in ranked)
    joined = [names for names, _ in ranked if len(names) == 2]
    assert joined, "the tiny EfficientNet has Conv + ReLU6 (Clip) layers"
    for first, activation in joined:
        assert nodes[activation].op_type in FUSED_ACTIVATIONS and nodes[first].output[0] in nodes[activation].input
