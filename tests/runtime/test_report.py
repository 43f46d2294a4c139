from __future__ import annotations

import json
from pathlib import Path

import pytest

from sperm_edge.runtime.report import build_report, render_markdown, sample_summary, wilson_interval, write_report

CLASSES = ["Abnormal_Sperm", "Non-Sperm", "Normal_Sperm"]


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [(10, 20, (0.2993, 0.7007)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)), (42, 250, (0.1268, 0.2193))],
)
def test_wilson_interval_matches_published_values(k: int, n: int, expected: tuple[float, float]) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4) and hi == pytest.approx(expected[1], abs=1e-4)
    assert wilson_interval(0, 0) is None


def _events(normal: int, abnormal: int, debris: int) -> list[dict]:
    classes = ["Normal_Sperm"] * normal + ["Abnormal_Sperm"] * abnormal + ["Non-Sperm"] * debris
    return [
        {
            "id": i + 1,
            "class": c,
            "confidence": 0.9,
            "flagged": c != "Normal_Sperm",
            "flag_reasons": ["abnormal"] if c != "Normal_Sperm" else [],
            "crop": f"flagged/{i + 1:06d}.png",
        }
        for i, c in enumerate(classes)
    ]


def test_percent_normal_leaves_non_sperm_out_and_warns_under_the_who_minimum() -> None:
    summary = sample_summary(_events(30, 90, 25), CLASSES, "Normal_Sperm")
    assert summary["counts"] == {"Abnormal_Sperm": 90, "Non-Sperm": 25, "Normal_Sperm": 30}
    assert summary["sperm_counted"] == 120 and summary["percent_normal"] == 25.0
    lo, hi = wilson_interval(30, 120)
    assert summary["ci95"] == [round(100 * lo, 2), round(100 * hi, 2)]
    assert "only 120 sperm counted; WHO asks for at least 200" in summary["warning"]
    assert summary["flagged"] == 115 and summary["flag_reasons"] == {"abnormal": 115}
    assert sample_summary(_events(60, 150, 0), CLASSES, "Normal_Sperm")["warning"] is None


def test_report_files_show_flagged_crops_beside_their_heatmaps(tmp_path: Path) -> None:
    (tmp_path / "explanations").mkdir()
    (tmp_path / "explanations" / "000002.png").write_bytes(b"png")
    run = {
        "source": "clip.mp4",
        "mode": "field",
        "backend": {"backend": "ort-cpu", "precision": "fp32"},
        "fps": 17.5,
        "frames": 10,
        "stages_ms": {"network": {"mean": 5.0, "p50": 4.8, "p95": 6.0, "n": 10}},
    }
    report = build_report(_events(1, 2, 0), CLASSES, "Normal_Sperm", run, tmp_path)
    write_report(tmp_path, report)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["percent_normal"] == pytest.approx(33.33) and saved["fps"] == 17.5
    assert [c["id"] for c in saved["flagged_cells"]] == [2, 3] and saved["flagged_cells"][0]["heatmap"]
    markdown = (tmp_path / "report.md").read_text()
    assert "**Normal forms: 33.3%** (95% Wilson interval" in markdown
    assert (
        "| 2 | Abnormal_Sperm | 0.90 | abnormal | ![crop](flagged/000002.png) | ![heatmap](explanations/000002.png) |"
        in markdown
    )
    assert "| 3 | Abnormal_Sperm | 0.90 | abnormal | ![crop](flagged/000003.png) | - |" in markdown
    assert render_markdown({**saved, "percent_normal": None})  # no normal class: still renders


@pytest.mark.parametrize(
    ("log", "message"),
    [
        (None, "is not a run folder: it has no events.jsonl"),
        ("", "has no run header"),
        ('{"id": 1, "class": "01_Normal"}\n', "has no run header"),  # a log written before run headers
        ('{"type": "run", "classes": ["a"]}\n[1, 2, 3]\n', "line 2 is not an event"),
    ],
)
def test_report_on_a_run_folder_it_cannot_use_says_why_in_one_line(tmp_path, capsys, log, message) -> None:
    from tests.conftest import run_cli

    run = tmp_path / "run"
    run.mkdir()
    if log is not None:
        (run / "events.jsonl").write_text(log)
    assert run_cli(["report", str(run)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert message in err and "Traceback" not in err


def test_a_report_the_machine_will_not_let_it_write_is_one_line_and_exit_1(tmp_path, capsys) -> None:
    """An OSError (here: report.json is a folder) is the machine's fault: named in one line, no traceback."""
    from tests.conftest import run_cli

    run = tmp_path / "run"
    (run / "report.json").mkdir(parents=True)
    (run / "events.jsonl").write_text('{"type": "run", "classes": ["01_Normal", "02_Tapered"]}\n')
    assert run_cli(["report", str(run)]) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert "error:" in err and "report.json" in err and "Traceback" not in err


def _hand_written_wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The formula `wilson_interval` computed before scipy's (kept here as the reference it must equal)."""
    import math

    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def test_scipys_wilson_interval_equals_the_formula_it_replaced() -> None:
    for n in (1, 2, 5, 13, 50, 200, 1000, 4321):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ours, reference = wilson_interval(k, n), _hand_written_wilson(k, n)
            assert abs(ours[0] - reference[0]) < 1e-9 and abs(ours[1] - reference[1]) < 1e-9, (k, n)


def test_the_report_says_how_far_its_heatmaps_can_be_trusted(tmp_path: Path) -> None:
    from sperm_edge.explain.scores import heatmap_trust

    section = {"engine": True, "method": "Grad-CAM++", "layer": "attention (CBAM)", "maps": "explainer",
               "explainer": {"method": "LayerCAM", "layer": "backbone.blocks.4"}, "pointing": 0.96,
               "heat_share": 0.55, "heat_share_centre_matched": 0.31, "quality": {"pointing": {"n": 26}}}  # fmt: skip
    trust = heatmap_trust(section)
    run = {"source": "clip.mp4", "mode": "field", "explanations": {"method": "LayerCAM", "trust": trust}}
    report = build_report(_events(1, 2, 0), CLASSES, "Normal_Sperm", run, tmp_path)
    markdown = render_markdown(report)
    assert "Heatmaps: LayerCAM maps mostly find the head (on 26 validation crops the peak fell on the head for 96%" \
        in markdown and "1.77x the heat of a centred blob" in markdown  # fmt: skip
    assert "| id | class | confidence | reasons | crop | LayerCAM |" in markdown


def test_a_run_that_counts_under_half_of_its_heads_says_its_percent_normal_is_not_to_be_used() -> None:
    """Issue 47: on real smears a bundle counted a third of the heads its finder found (the rest set aside as not
    heads or called Non-Sperm) and reported its % normal as if it described the sample; the report now says
    plainly it does not. A debris-rich sample whose verifier sets half its objects aside is no fault."""
    aside = {"file": "set_aside.jsonl"}
    debris_rich = build_report(_events(10, 20, 5), CLASSES, "Normal_Sperm", {"set_aside": {
        **aside, "cells": 30, "not_a_head": 30}})  # fmt: skip
    assert debris_rich["trust"]["found"] == 65 and debris_rich["trust"]["warning"] is None
    assert "Do not use" not in render_markdown(debris_rich)
    called_debris = build_report(_events(10, 20, 35), CLASSES, "Normal_Sperm", {})
    assert called_debris["trust"]["counted_share"] == round(30 / 65, 4)
    assert "only 30 of the 65 cells taken for heads were counted as sperm" in called_debris["trust"]["warning"]
    text = render_markdown(called_debris)
    assert "**Do not use this % normal as it is:**" in text and "sperm-edge adapt" in text
    unlike = build_report(_events(10, 20, 0), CLASSES, "Normal_Sperm", {"set_aside": {
        **aside, "cells": 31, "unlike_training": 31}})  # fmt: skip
    assert "only 30 of the 61 cells" in unlike["trust"]["warning"]
    rejected = build_report(_events(10, 20, 0), CLASSES, "Normal_Sperm", {"set_aside": {
        **aside, "cells": 61, "not_a_head": 61}})  # fmt: skip
    assert "61 of the 91 objects found were set aside as not a head" in rejected["trust"]["warning"]
    assert build_report([], CLASSES, "Normal_Sperm", {})["trust"]["counted_share"] is None  # nothing found: no verdict
