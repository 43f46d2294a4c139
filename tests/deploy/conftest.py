"""Deploy fixtures: the runtime tests' tiny bundle and numbered video."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime._bundle import build_tiny_bundle
from tests.runtime.conftest import write_numbered_video


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.getbasetemp())


@pytest.fixture
def numbered_video(tmp_path: Path) -> Path:
    return write_numbered_video(tmp_path / "numbered.avi")
