"""End-to-end stream figures through the runtime, at a tiny size: rows and keys, not speeds."""

from __future__ import annotations

from sperm_edge.bench.stream import StreamConfig, measure_stream
from sperm_edge.bundle import load_bundle


def test_stream_runs_each_mode_with_and_without_explanations(tiny_bundle, bench_data, tmp_path) -> None:
    cfg = StreamConfig(frames=2, backend="ort-cpu", field_size=(256, 192), distinct_fields=1, gradcam_crops=2)
    steps = []
    result = measure_stream(
        load_bundle(tiny_bundle),
        bench_data,
        tmp_path / "work",
        cfg,
        threads=1,
        on_step=lambda what, done, total: steps.append(what),
    )
    runs = result["runs"]
    assert [(r["mode"], r["explain"]) for r in runs] == [
        ("field", "none"),
        ("field", "flagged"),
        ("crop", "none"),
        ("crop", "flagged"),
    ]
    for run in runs:
        assert run["frames"] == 2 and run["fps"] > 0 and run["backend"] == "ort-cpu"
    crop = runs[2]
    assert crop["cells"] == 2  # crop mode: one cell per frame
    assert {"explained", "explain_dropped"} <= set(runs[3])
    cam = result["gradcam"]
    assert cam["crops"] == 2 and cam["p50_ms"] > 0 and cam["p95_ms"] >= cam["p50_ms"]
    assert steps[-1] == "stream"


def test_a_stream_failure_is_reported_and_does_not_raise(tiny_bundle, tmp_path) -> None:
    from sperm_edge.bench.run import BenchConfig, _stream

    cfg = BenchConfig(bundle=tiny_bundle, stream=StreamConfig(frames=1, modes=("crop",), backend="openvino"))
    result = _stream(load_bundle(tiny_bundle), cfg, threads=1, on_step=None)
    assert result["runs"] == [] and result["gradcam"] is None
    assert "openvino" in result["error"]


def test_the_stream_rows_run_the_session_sperm_edge_run_opens(tiny_bundle, bench_data, tmp_path) -> None:
    """Every setting the bundle decides (temperature, drift, framing, views, budget) is derived the same way."""
    import json

    from tests.conftest import run_cli

    cfg = StreamConfig(frames=2, modes=("field",), backend="ort-cpu", field_size=(256, 192), distinct_fields=1)
    measure_stream(load_bundle(tiny_bundle), bench_data, tmp_path / "work", cfg, threads=1)
    frames, out = tmp_path / "work" / "field-frames", tmp_path / "run"
    args = ["run", str(tiny_bundle), "--source", str(frames), "--backend", "ort-cpu", "--threads", "1"]
    assert run_cli([*args, "--explain", "flagged", "--headless", "--out", str(out)]) == 0
    bench = json.loads((tmp_path / "work" / "field-out" / "report.json").read_text())
    run = json.loads((out / "report.json").read_text())
    assert bench["session"] == run["session"] and run["session"]["budget"]["policy"] == "budget"
    assert (
        run["session"]["rolling_views"] and run["session"]["temperature"] == load_bundle(tiny_bundle).card.temperature
    )
