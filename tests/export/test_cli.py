"""`sperm-edge export` on bad input: exit code 2, one clear line, no traceback, nothing written."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_tiny_folder
from tests.export.conftest import leftovers


def _export(args: list[str], capsys) -> tuple[int, str]:
    code = run_cli(["export", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_missing_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "bundle"
    code, text = _export([str(tmp_path / "nowhere"), "--out", str(out)], capsys)
    assert code == 2
    assert "checkpoint file not found" in text and "Traceback" not in text
    assert leftovers(out) == []


def test_corrupt_checkpoint(tiny_run, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copyfile(tiny_run / f"best{suffix}", run / f"best{suffix}")
    weights = run / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "bundle"
    code, text = _export([str(run), "--out", str(out)], capsys)
    assert code == 2 and "sha256" in text and "Traceback" not in text
    assert leftovers(out) == []


def test_existing_output_needs_force(tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, text = _export([str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and "--force" in text
    assert (out / "keep.txt").read_text() == "mine"


def test_output_may_not_replace_the_run(tiny_run, capsys) -> None:
    code, text = _export([str(tiny_run), "--out", str(tiny_run), "--force"], capsys)
    assert code == 2 and "would replace" in text
    assert (tiny_run / "best.safetensors").is_file()


def test_calibration_classes_the_model_does_not_know(tiny_run, tmp_path, capsys) -> None:
    calib = write_tiny_folder(tmp_path / "calib", classes=("alpha", "omega"), per_class=2)
    out = tmp_path / "bundle"
    code, text = _export([str(tiny_run), "--out", str(out), "--int8", "--calib", str(calib)], capsys)
    assert code == 2 and "omega" in text and "does not know" in text and "Traceback" not in text
    assert leftovers(out) == []


@pytest.mark.parametrize("content", ["empty", "unreadable"])
def test_empty_or_unreadable_calibration_folder(tiny_run, tmp_path, capsys, content) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    if content == "unreadable":
        (calib / "a.png").write_bytes(b"not an image")
    out = tmp_path / "bundle"
    code, text = _export([str(tiny_run), "--out", str(out), "--int8", "--calib", str(calib)], capsys)
    assert code == 2 and "no readable image" in text
    assert leftovers(out) == []


def test_trt_without_tensorrt_fails_at_once(tiny_run, tmp_path, capsys) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here, so its absence cannot be shown")
    out = tmp_path / "bundle"
    code, text = _export([str(tiny_run), "--out", str(out), "--int8", "--trt"], capsys)
    assert code == 2 and "TensorRT" in text and "JetPack" in text and "Traceback" not in text
    assert leftovers(out) == []


def test_fp16_needs_trt(tiny_run, tmp_path, capsys) -> None:
    code, text = _export([str(tiny_run), "--out", str(tmp_path / "b"), "--fp16"], capsys)
    assert code == 2 and "--trt" in text


def test_a_failure_midway_leaves_nothing(tiny_run, tmp_path, capsys, monkeypatch) -> None:
    from sperm_edge.errors import SpermEdgeError
    from sperm_edge.export import _stages

    def half_written(model, img_size, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise SpermEdgeError("planted failure after writing part of the bundle")

    monkeypatch.setattr(_stages, "export_onnx", half_written)
    out = tmp_path / "bundle"
    code, text = _export([str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and "planted failure" in text
    assert leftovers(out) == []


def test_refused_int8_exits_3_and_says_what_to_do(tmp_path, capsys, monkeypatch) -> None:
    from sperm_edge.export import pipeline
    from sperm_edge.export.gate import check_drop

    manifest = {"models": {}, "files": {}, "benchmarks": [], "engines": []}
    gate = check_drop("int8", 0.9, 0.5)
    search = {"stopped": "exhausted", "chosen": 2, "candidates": [{}, {}, {}]}
    rejected = [{"precision": "int8", "reason": "accuracy drop", "search": search}]
    result = pipeline.ExportResult(path=tmp_path / "b", manifest=manifest, gates=[gate], rejected=rejected)
    monkeypatch.setattr(pipeline, "export_bundle", lambda *args, **kwargs: result)
    code, text = _export(["run", "--out", str(tmp_path / "b"), "--int8"], capsys)
    assert code == 3 and "INT8 refused" in text and "--allow-drop" in text
    assert "3 candidates tried (search exhausted" in " ".join(text.split())


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("auto", None), ("none", ()), ("Sigmoid, *blocks.0/*", ("Sigmoid", "*blocks.0/*"))],
)
def test_keep_float_auto_takes_the_architecture_default_and_none_quantizes_all(value, parsed) -> None:
    from sperm_edge.cli.export import _keep_float
    from sperm_edge.model import get_entry

    assert _keep_float(value) == parsed
    # chosen on validation splits (benchmarks/keep_float.py): Lite0 quantizes fully; B0 was not measured
    assert (
        get_entry("cbam_efficientnet_b0").int8_keep_float and get_entry("cbam_efficientnet_lite0").int8_keep_float == ()
    )


def test_int8_gate_needs_validation_images(tiny_run, tmp_path, capsys) -> None:
    """A checkpoint whose split lost its val part (and no --val): refused before any work, nothing written."""
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "best.json").read_text())
    meta["split"].pop("val")
    (run / "best.json").write_text(json.dumps(meta))
    out = tmp_path / "bundle"
    code, text = _export([str(run), "--out", str(out), "--int8"], capsys)
    assert code == 2 and "records no val split" in text and "--val DIR" in text and "Traceback" not in text
    assert leftovers(out) == []
