"""bench.json, machine.json, bench.csv, bench.md, bench.png and stream.json from rows (no measurement)."""

from __future__ import annotations

import csv
import json

from sperm_edge.bench.machine import machine_facts
from sperm_edge.bench.report import COLUMNS, accuracy_rows, markdown, not_measured, speed_rows, write_all

ROWS = [
    {
        "backend": "torch-eager",
        "precision": "fp32",
        "batch": 1,
        "status": "ok",
        "p50_ms": 20.0,
        "p95_ms": 25.0,
        "p99_ms": 26.0,
        "images_per_s": 50.0,
        "speedup": 1.0,
        "accuracy": 0.8,
        "macro_f1": 0.79,
        "agreement": 1.0,
        "reference": True,
    },
    {
        "backend": "torch-eager",
        "precision": "fp32",
        "batch": 8,
        "status": "ok",
        "p50_ms": 120.0,
        "p95_ms": 130.0,
        "p99_ms": 131.0,
        "images_per_s": 66.7,
        "speedup": 1.33,
        "accuracy": 0.8,
        "macro_f1": 0.79,
        "agreement": 1.0,
    },
    {
        "backend": "ort-cpu",
        "precision": "int8",
        "batch": 1,
        "status": "ok",
        "p50_ms": 8.0,
        "p95_ms": 9.0,
        "p99_ms": 9.5,
        "images_per_s": 125.0,
        "speedup": 2.5,
        "accuracy": 0.7,
        "macro_f1": 0.69,
        "agreement": 0.9,
    },
    {"backend": "ort-cuda", "precision": "fp32", "batch": 1, "status": "unavailable", "reason": "no GPU"},
    {"backend": "ort-cuda", "precision": "fp32", "batch": 8, "status": "unavailable", "reason": "no GPU"},
    {"backend": "trt", "precision": "fp16", "batch": 1, "status": "failed", "reason": "RuntimeError: boom"},
]
STREAM = {
    "runs": [
        {
            "mode": "crop",
            "explain": "none",
            "backend": "ort-cpu",
            "precision": "fp32",
            "frames": 5,
            "fps": 30.0,
            "cells_per_s": 30.0,
            "network_ms_p50": 5.0,
        }
    ],
    "gradcam": {"crops": 3, "threads": 2, "p50_ms": 90.0, "p95_ms": 99.0, "mean_ms": 91.0},
}


def test_every_file_is_written(tmp_path) -> None:
    machine = machine_facts(2)
    paths = write_all(tmp_path / "out", ROWS, machine, STREAM)
    assert [p.name for p in paths] == [
        "bench.json",
        "machine.json",
        "bench.csv",
        "bench.md",
        "bench.png",
        "stream.json",
    ]
    assert json.loads(paths[0].read_text()) == ROWS
    assert json.loads(paths[1].read_text())["threads"] == 2
    with open(paths[2], newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS
        assert len(list(reader)) == len(ROWS)
    assert paths[4].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths[5].read_text()) == STREAM
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_tables_show_measured_rows_and_list_the_others_once() -> None:
    assert [r[:2] for r in speed_rows(ROWS)] == [
        ["torch-eager fp32", "1"],
        ["torch-eager fp32", "8"],
        ["ort-cpu int8", "1"],
    ]
    assert [r[0] for r in accuracy_rows(ROWS)] == ["torch-eager fp32", "ort-cpu int8"]
    assert not_measured(ROWS) == [
        ("ort-cuda fp32", "unavailable", "no GPU"),
        ("trt fp16", "failed", "RuntimeError: boom"),
    ]


def test_markdown_has_the_machine_the_command_and_every_section() -> None:
    machine = {**machine_facts(2), "command": "sperm-edge bench b --out o"}
    text = markdown(ROWS, machine, STREAM)
    for part in (
        "Machine: ",
        "sperm-edge bench b --out o",
        "## Speed",
        "## Accuracy",
        "## Not measured",
        "`ort-cuda fp32`: unavailable — no GPU",
        "## End-to-end stream",
        "Grad-CAM++ of one crop",
    ):
        assert part in text, part
    assert "| ort-cpu int8 | 1 | 8.00 |" in text
