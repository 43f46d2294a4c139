"""Fixtures of the benchmark tests: a tiny labelled folder and a tiny bundle (FP32 + INT8 ONNX, checkpoint).

The bundle is built here with torch and ONNX Runtime's quantizer rather than the export stage, so
these tests depend only on the bundle contract (sperm_edge/bundle.py). Random weights: the tests
check files, columns and statuses, not accuracy. Built once per session (a few seconds).
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_tiny_folder

CLASSES = ("alpha", "beta", "gamma")
IMG_SIZE = 48


def _calibration_reader(size: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter(
                [{"input": rng.standard_normal((1, 3, size, size), dtype=np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def build_tiny_bundle(root: Path, data: Path, int8: bool = True) -> Path:
    """A schema-1 bundle of a random-weight simple_cnn at 48 px; its recorded test split is every other image."""
    import torch
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from sperm_edge.bundle import FORMAT, MANIFEST, SCHEMA_VERSION, describe_file
    from sperm_edge.io import atomic_write_json
    from sperm_edge.model import create_model, get_entry
    from sperm_edge.model.checkpoint import package_versions, save_checkpoint

    root.mkdir(parents=True)
    torch.manual_seed(0)
    arch = "simple_cnn"  # small and quick to export and quantize; the tests check files and columns
    model = create_model(arch, num_classes=len(CLASSES)).eval()
    spec = get_entry(arch).preprocess(IMG_SIZE)
    rel = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    meta = {
        "arch": arch,
        "classes": list(CLASSES),
        "normal_class": CLASSES[0],
        "abnormal_classes": list(CLASSES[1:]),
        "preprocess": spec.to_dict(),
        "split": {"train": [], "val": [], "test": rel[::2]},
    }
    save_checkpoint(root / "checkpoint", model, meta)
    torch.onnx.export(
        model,
        torch.zeros(1, 3, IMG_SIZE, IMG_SIZE),
        str(root / "model.onnx"),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    models = {"fp32": {"file": "model.onnx"}}
    if int8:
        quantize_static(
            str(root / "model.onnx"),
            str(root / "model.int8.onnx"),
            _calibration_reader(IMG_SIZE),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        models["int8"] = {"file": "model.int8.onnx"}
    files = {p.name: describe_file(p) for p in sorted(root.iterdir()) if p.is_file()}
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "arch": arch,
        "classes": list(CLASSES),
        "normal_class": CLASSES[0],
        "abnormal_classes": list(CLASSES[1:]),
        "preprocess": spec.to_dict(),
        "files": files,
        "models": models,
        "engines": [],
        "checkpoint": {"weights": "checkpoint.safetensors", "meta": "checkpoint.json"},
        "benchmarks": [],
        "versions": package_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    atomic_write_json(root / MANIFEST, manifest)
    return root


@pytest.fixture(scope="session")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("bench") / "tiny data", classes=CLASSES, per_class=4)


@pytest.fixture(scope="session")
def _bundle_master(tmp_path_factory: pytest.TempPathFactory, bench_data: Path) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bench") / "bundle", bench_data)


@pytest.fixture
def tiny_bundle(_bundle_master: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny bundle (tests may damage it)."""
    return Path(shutil.copytree(_bundle_master, tmp_path / "bundle"))


def read_rows(out: Path) -> list[dict]:
    return json.loads((out / "bench.json").read_text())
