"""Engine fixtures: the runtime tests' tiny bundle (CBAM-Lite0 at 64 px, untrained head; FP32 ONNX + checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime._bundle import build_tiny_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("engines"))
