"""`sperm-edge data real-field`: the bench's clip and field, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = run_cli(["data", "real-field", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_writes_a_clip_and_a_field_with_ground_truth(hushem: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench out"
    args = ["--data", str(hushem.parent), "--out", str(out), "--cells", "5", "--frames", "4", "--width", "320",
            "--height", "240", "--seed", "3"]  # fmt: skip
    code, text = _run(args, capsys)
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "clip.mp4", "field.json", "field.png"]
    clip = json.loads((out / "clip.json").read_text())
    field = json.loads((out / "field.json").read_text())
    assert len(clip["frames"]) == 4 and clip["style"] == "hushem"
    assert field["cells"] == clip["frames"][0]["cells"] and field["index"] == 0
    code, text = _run(args, capsys)  # never clobbered without --force
    assert code == 2 and "already exists" in text and "Traceback" not in text
    code, text = _run([*args, "--look", "defocus", "--force"], capsys)
    assert code == 0 and json.loads((out / "clip.json").read_text())["look"] == "defocus", text


def test_a_missing_or_empty_data_folder_is_one_clear_line_and_exit_code_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, text = _run(["--data", str(tmp_path / "nowhere"), "--out", str(out)], capsys)
    assert code == 2 and "data folder not found" in text and "Traceback" not in text
    code, text = _run(["--data", str(tmp_path), "--out", str(out), "--look", "sepia"], capsys)
    assert code == 2 and "unknown field look 'sepia'" in text and "Traceback" not in text
    empty = tmp_path / "empty"
    empty.mkdir()
    code, text = _run(["--data", str(empty), "--out", str(out)], capsys)
    assert code == 2 and "has no hushem/ set" in text and "Traceback" not in text
    (empty / "smids" / "Normal_Sperm").mkdir(parents=True)
    (empty / "smids" / "Abnormal_Sperm").mkdir(parents=True)
    code, text = _run(["--data", str(empty), "--out", str(out), "--style", "smids"], capsys)
    assert code == 2 and "hold no images" in text and "Traceback" not in text
    assert not out.exists()  # nothing half-written
