"""Session fixtures for the export tests: one tiny trained run and one full INT8 export of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_tiny_folder

CORRUPT_NAME = "broken.png"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A cbam_efficientnet_lite0 trained for 1 + 1 epochs at 32 px on a generated 3-class set."""
    from sperm_edge.train.config import TrainConfig
    from sperm_edge.train.run import train

    root = tmp_path_factory.mktemp("export-run")
    data = write_tiny_folder(root / "data", per_class=12)
    out = root / "run"
    cfg = TrainConfig(
        data=str(data), out=str(out), phase1_epochs=1, phase2_epochs=1, img_size=32, batch_size=16, pretrained=True
    )
    train(cfg)
    return out


@pytest.fixture(scope="session")
def calib_with_corrupt(tiny_run, tmp_path_factory) -> Path:
    """A copy of the training data with one corrupt file among the images."""
    target = tmp_path_factory.mktemp("calib") / "calib"
    shutil.copytree(tiny_run.parent / "data", target)
    (target / "beta" / CORRUPT_NAME).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return target


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, calib_with_corrupt, tmp_path_factory) -> Path:
    """`sperm-edge export RUN --out B --int8 --calib DIR --allow-drop --search-budget 0`: a 1-epoch model's INT8
    drop is noise, so the bundle ships the first candidate (the search has its own tests)."""
    out = tmp_path_factory.mktemp("bundles") / "bundle"
    args = ["export", str(tiny_run), "--out", str(out), "--int8", "--calib", str(calib_with_corrupt)]
    code = run_cli([*args, "--allow-drop", "--search-budget", "0"])
    assert code == 0
    return out


def leftovers(out: Path) -> list[str]:
    """Anything an aborted export left: the output itself or a temporary sibling."""
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))
