"""The `runtime` extra is a real install: a fresh virtual environment with only it runs a bundle on a clip.

What a Jetson that only classifies installs (`pip install "sperm-edge[runtime]"`): no torch, no
timm, no grad-cam. The project is copied out of the checkout first, so the build leaves nothing
in the repository, and everything runs from outside it, so nothing imports the checkout instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_runtime_extra_runs_a_bundle_without_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO, project, ignore=shutil.ignore_patterns(".git", "tests", "runs", "build", "*.egg-info",
                                                                 "__pycache__", "benchmarks", "docs"))  # fmt: skip
    venv = tmp_path / "venv"
    done = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert done.returncode == 0, done.stderr
    python, cli = venv / "bin" / "python", venv / "bin" / "sperm-edge"
    done = _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{project}[runtime]"],
                tmp_path, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    # nothing of the training stack came along
    for module in ("torch", "torchvision", "timm", "pytorch_grad_cam", "matplotlib"):
        probe = _run([str(python), "-c", f"import {module}"], tmp_path)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    where = _run([str(python), "-c", "import sperm_edge; print(sperm_edge.__file__)"], tmp_path)
    assert str(venv) in where.stdout, where.stdout + where.stderr

    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(4):
        cv2.imwrite(str(crops / f"c{i}.png"), np.full((50, 40, 3), 50 * i + 20, np.uint8))
    out = tmp_path / "out"
    args = [str(cli), "run", str(tiny_bundle), "--source", str(crops), "--mode", "crop", "--headless",
            "--out", str(out)]  # fmt: skip
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len((out / "events.jsonl").read_text().splitlines()) == 1 + 4  # the run header, then the cells
    report = json.loads((out / "report.json").read_text())
    assert sum(report["counts"].values()) == 4 and report["backend"]["backend"] == "ort-cpu"

    # the doctor of this install: ONNX Runtime on the CPU, and the bundle can run
    done = _run([str(cli), "doctor", "--bundle", str(tiny_bundle), "--json"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    doctor = json.loads(done.stdout)
    assert "CPUExecutionProvider" in doctor["onnxruntime"]["providers"]
    assert doctor["bundle"]["auto_backend"] == "ort-cpu"
