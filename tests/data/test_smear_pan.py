"""A pan over real smear fields: frames the camera's size, every head's box moving with the window."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from sperm_edge.data.smear_pan import pan_offsets, window_truth
from sperm_edge.data.smears import SmearField, is_smear_folder
from sperm_edge.errors import SpermEdgeError
from tests.conftest import SHARED_DATA, run_cli


def test_the_window_goes_corner_to_corner_and_back_and_boxes_move_with_it() -> None:
    offsets = pan_offsets((1280, 1024), (960, 768), 5)
    assert offsets == [(0, 0), (160, 128), (320, 256), (160, 128), (0, 0)]
    field = SmearField("f.jpg", Path("f.jpg"), ({"id": 3, "box": [100, 100, 200, 180], "partial": False},))
    assert window_truth(field, 2, (0, 0), (960, 768))[0] == {
        "id": 2003, "box": [100, 100, 200, 180], "class": "head", "debris": False, "partial": False,
    }  # fmt: skip
    cut = window_truth(field, 2, (150, 0), (960, 768))[0]
    assert cut["box"] == [0, 100, 50, 180] and cut["partial"]
    assert window_truth(field, 2, (320, 256), (960, 768)) == []
    with pytest.raises(SpermEdgeError, match="does not fit"):
        pan_offsets((640, 480), (960, 768), 5)


@pytest.mark.skipif(not is_smear_folder(SHARED_DATA / "smears"), reason="real smear fields not found")
def test_real_pan_writes_a_clip_of_real_fields_with_its_truth(tmp_path: Path) -> None:
    out = tmp_path / "pan"
    args = ["data", "real-pan", "--fields", str(SHARED_DATA / "smears"), "--out", str(out), "--count", "2",
            "--frames-per-field", "3"]  # fmt: skip
    assert run_cli(args) == 0
    truth = json.loads((out / "clip.json").read_text())
    assert len(truth["frames"]) == 6 and len(truth["fields"]) == 2
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 960
    capture.release()
    assert all(c["id"] >= 1000 for f in truth["frames"] for c in f["cells"])
    assert run_cli(args) != 0 and len(json.loads((out / "clip.json").read_text())["frames"]) == 6  # refused, kept
