"""Shared fixtures: tiny generated class folders, and the real data sets beside the repository."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_tiny_folder(
    root: Path,
    classes: tuple[str, ...] = ("alpha", "beta", "gamma"),
    per_class: int = 12,
    size: int = 40,
    seed: int = 0,
) -> Path:
    """A learnable class-folder set: class k draws a shape with k+3 corners on a noisy pink background."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = np.full((size, size, 3), (200, 170, 210), np.uint8)
            image = cv2.add(image, rng.integers(0, 25, image.shape, dtype=np.uint8))
            centre = rng.uniform(size * 0.4, size * 0.6, 2)
            angles = np.linspace(0, 2 * np.pi, k + 4, endpoint=False) + rng.uniform(0, np.pi)
            points = centre + size * 0.3 * np.stack([np.cos(angles), np.sin(angles)], 1)
            cv2.fillPoly(image, [points.astype(np.int32)], (120, 40, 110))
            cv2.imwrite(str(folder / f"img {i}.png"), image)
    return root


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return write_tiny_folder(tmp_path / "tiny data")


@pytest.fixture(scope="session")
def fields(tmp_path_factory) -> list[Path]:
    """Synthetic microscope fields (PNG) with ground truth beside them (.json)."""
    from sperm_edge.data.synthetic import write_field

    root = tmp_path_factory.mktemp("fields")
    return [write_field(root / f"field{i}.png", seed=10 + i, size=(640, 480), n_cells=10) for i in range(3)]


@pytest.fixture
def hushem() -> Path:
    path = SHARED_DATA / "hushem"
    if not path.is_dir():
        pytest.skip(f"real HuSHeM data not found at {path}")
    return path


@pytest.fixture
def smids() -> Path:
    path = SHARED_DATA / "smids"
    if not path.is_dir():
        pytest.skip(f"real SMIDS data not found at {path}")
    return path


#: lines for a test's subprocess: every `import torch` (and torch.*) fails as on a machine without PyTorch. A finder,
#: not `sys.modules["torch"] = None`: libraries that look for torch in sys.modules (scipy's array API layer) then
#: see no torch, as they would on such a machine, instead of a None they cannot use.
BLOCK_TORCH = """import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _NoTorch())
"""


def run_cli(args: list[str]) -> int:
    """Run `sperm-edge ARGS` in-process; return its exit code."""
    from sperm_edge.cli import main

    try:
        main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
