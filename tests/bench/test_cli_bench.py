"""`sperm-edge bench` end to end at a tiny size: files and columns, not speeds."""

from __future__ import annotations

import csv
import json

import pytest

from sperm_edge.bench.report import COLUMNS
from sperm_edge.bench.variants import has_gpu
from tests.bench.conftest import read_rows
from tests.conftest import run_cli

REQUIRED = ("backend", "precision", "batch", "status", "p50_ms", "p95_ms", "images_per_s", "accuracy", "agreement")


@pytest.fixture(scope="module")
def bench_out(_bundle_master, bench_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out") / "results"
    code = run_cli(
        [
            "bench",
            str(_bundle_master),
            "--data",
            str(bench_data),
            "--batch",
            "1,2",
            "--iters",
            "3",
            "--warmup",
            "1",
            "--rounds",
            "2",
            "--no-memory",
            "--no-stream",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_bench_json_is_a_list_of_rows_with_the_required_columns(bench_out) -> None:
    rows = read_rows(bench_out)
    assert isinstance(rows, list) and rows
    for row in rows:
        assert set(REQUIRED) <= set(row), row
        assert row["status"] in ("ok", "unavailable", "failed")
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["backend"], r["precision"]) for r in ok} >= {
        ("torch-eager", "fp32"),
        ("torch-channels-last", "fp32"),
        ("ort-cpu", "fp32"),
        ("ort-cpu", "int8"),
        ("ort-cpu+tta", "fp32"),  # the cost of test-time augmentation, beside the rest
    }
    assert {r["batch"] for r in ok} == {1, 2}
    for row in ok:
        assert row["p50_ms"] > 0 and row["p95_ms"] >= row["p50_ms"] and row["images_per_s"] > 0
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["agreement"] <= 1 and row["iters"] == 3
        assert row["speedup"] > 0 and row["model_mb"] > 0
    reference = [r for r in rows if r.get("reference")]
    assert [(r["backend"], r["batch"], r["speedup"]) for r in reference] == [("torch-eager", 1, 1.0)]
    eager = [r for r in ok if r["backend"] == "torch-eager"]
    assert all(r["agreement"] == 1.0 for r in eager)


@pytest.mark.skipif(has_gpu(), reason="this machine has a GPU")
def test_gpu_only_rows_are_unavailable_with_a_reason(bench_out) -> None:
    rows = [r for r in read_rows(bench_out) if r["backend"] in ("ort-cuda", "ort-trt", "trt")]
    assert rows and all(r["status"] == "unavailable" and "no GPU" in r["reason"] for r in rows)
    assert all(r["p50_ms"] is None and r["accuracy"] is None for r in rows)


def test_the_other_files_are_written(bench_out) -> None:
    machine = json.loads((bench_out / "machine.json").read_text())
    assert {"cpu", "threads", "gpus", "versions", "settings", "command"} <= set(machine)
    assert machine["command"].startswith("sperm-edge bench ")
    with open(bench_out / "bench.csv", newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == COLUMNS
    text = (bench_out / "bench.md").read_text()
    assert "## Speed" in text and "## Accuracy" in text and "torch-eager fp32" in text
    assert (bench_out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert not (bench_out / "stream.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "1,x"], "--batch must be positive integers"),
        (["--batch", "0"], "--batch must be positive integers"),
        (["--backends", "ort-cpu,openvino"], "unknown backend"),
    ],
)
def test_bad_options_are_one_line_errors(_bundle_master, tmp_path, capsys, args, message) -> None:
    assert run_cli(["bench", str(_bundle_master), *args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_bundle_is_a_one_line_error(tmp_path, capsys) -> None:
    assert run_cli(["bench", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "bundle folder not found" in capsys.readouterr().err
