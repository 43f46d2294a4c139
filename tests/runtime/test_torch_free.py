"""The classify-only path works on a machine without PyTorch (a Jetson with ONNX Runtime or TensorRT only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import BLOCK_TORCH

SCRIPT = (
    BLOCK_TORCH
    + r"""
import json
from sperm_edge.bundle import load_bundle
from sperm_edge.explain.worker import ExplainWorker
from sperm_edge.engines import available_backends
from sperm_edge.runtime.session import SessionOptions, open_session

bundle = load_bundle(sys.argv[1])
options = SessionOptions(mode="crop", explain="every", min_confidence=1.1)  # flag everything
with open_session(bundle, sys.argv[2], sys.argv[3], options) as session:
    session.run()
maps = session.outputs.explanations
with ExplainWorker(bundle.checkpoint_stem(), sys.argv[3] + "/torch-explanations") as worker:
    pass
print(json.dumps({"backends": available_backends(bundle), "chosen": session.engine.name,
                  "events": len(session.outputs.events), "explain_error": worker.error,
                  "explained": maps.explained, "heatmaps": len(maps.heatmaps),
                  "png": maps.heatmaps.png(maps.heatmaps.tracks()[0])[:8].hex(),
                  "torch_loaded": sys.modules.get("torch") is not None}))
"""
)


def test_classify_without_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(3):
        cv2.imwrite(str(crops / f"c{i}.png"), np.full((50, 40, 3), 60 * i, np.uint8))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_bundle), str(crops), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backends"] == ["ort-cpu"] and result["chosen"] == "ort-cpu"
    assert result["events"] == 3 and not result["torch_loaded"]
    assert "explanations need PyTorch" in result["explain_error"]  # the checkpoint path needs torch...
    assert result["explained"] == 3 and result["heatmaps"] == 3  # ...the engine's maps do not
    assert result["png"] == "89504e470d0a1a0a"
    for i in range(1, 4):
        info = json.loads((tmp_path / "out" / "explanations" / f"{i:06d}.json").read_text())
        assert info["source"] == "engine" and (tmp_path / "out" / "explanations" / f"{i:06d}.png").is_file()
    assert len((tmp_path / "out" / "events.jsonl").read_text().splitlines()) == 1 + 3  # the run header, the cells
