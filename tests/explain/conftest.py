"""Explain fixtures: the runtime tests' tiny bundle (built once per session) and synthetic crops with masks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime._bundle import build_tiny_bundle, make_crops


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def masked_crops(tmp_path_factory) -> Path:
    """Eight synthetic HuSHeM-style crops (two per class) with head masks in _masks/."""
    return make_crops(tmp_path_factory.getbasetemp() / "masked-crops", n=8, seed=5)
