"""Peak resident memory of one variant, in a child process of its own."""

from __future__ import annotations

from sperm_edge.bench.memory import measure_memory
from sperm_edge.bench.variants import Variant


def test_the_child_reports_its_own_peak_not_the_parents(tiny_bundle) -> None:
    ballast = bytearray(300 * 1024 * 1024)  # the parent's peak must not leak into the child's figure
    ballast[::4096] = b"x" * len(ballast[::4096])
    figures = measure_memory(tiny_bundle, Variant("ort-cpu", "fp32", "model.onnx"), threads=1, batch=2, calls=1)
    del ballast
    assert "memory_error" not in figures, figures
    assert 10 < figures["peak_rss_mb"] < 300
    assert 0 <= figures["rss_delta_mb"] < figures["peak_rss_mb"]


def test_a_failing_child_is_reported_not_raised(tiny_bundle) -> None:
    figures = measure_memory(tiny_bundle, Variant("ort-cpu", "int4", None), threads=1, batch=1)
    assert "has no int4 model" in figures["memory_error"]
