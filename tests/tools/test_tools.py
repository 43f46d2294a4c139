"""The one-off tools: packing the data sets for a remote GPU, the CUDA latency script."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sperm_edge.data.folder import load_image_folder
from sperm_edge.data.splits import kfold_splits
from sperm_edge.preprocess import PreprocessSpec, resize_rgb
from tests.benchmarks._scripts import TOOLS, load_script
from tests.conftest import write_tiny_folder


def test_packing_is_lossless_after_the_resize_and_keeps_the_folds(tmp_path) -> None:
    pack_data = load_script("pack_data", TOOLS)
    source = write_tiny_folder(tmp_path / "src", per_class=10, size=37)
    pack_data.pack(source, tmp_path / "packed", size=24)
    original, packed = load_image_folder(source), load_image_folder(tmp_path / "packed")
    spec = PreprocessSpec(24, (0.0,) * 3, (1.0,) * 3)
    assert all(np.array_equal(resize_rgb(a, spec), b) for a, b in zip(original.images, packed.images, strict=True))
    assert kfold_splits(packed.labels, packed.pixel_hashes, 5, 0) == kfold_splits(
        original.labels, original.pixel_hashes, 5, 0
    )


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("pack_data.py", ["--data-root", "{tmp}/nowhere", "--out", "{tmp}/o", "--datasets", "hushem"], "not found"),
        ("pack_data.py", ["--size", "smids128"], "NAME=PIXELS"),
        ("cuda_latency.py", ["{tmp}/missing", "--data", "{tmp}", "--out", "{tmp}/c.json"], "not found"),
    ],
)
def test_tools_refuse_bad_input_in_one_line(script, args, message, tmp_path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = subprocess.run([sys.executable, str(TOOLS / script), *args], capture_output=True, text=True)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
