from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from sperm_edge.data.folder import load_image_folder
from sperm_edge.errors import SpermEdgeError


def test_corrupt_files_are_skipped_counted_and_listed(tiny_folder, caplog) -> None:
    (tiny_folder / "alpha" / "broken.bmp").write_bytes(b"BM not really")
    (tiny_folder / "beta" / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tiny_folder)
    assert len(data) == 36
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in data.skipped) == ["broken.bmp", "empty.png"]
    assert "skipped 2 unreadable file(s)" in caplog.text and "broken.bmp" in caplog.text


def test_class_order_follows_the_preset_and_folders_with_underscore_are_ignored(tmp_path) -> None:
    for name in ("04_Amorphous", "01_Normal", "03_Pyriform", "02_Tapered", "_masks"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), np.zeros((5, 7, 3), np.uint8))
    data = load_image_folder(tmp_path)
    assert data.classes == ["01_Normal", "02_Tapered", "03_Pyriform", "04_Amorphous"]
    assert data.preset.name == "hushem"


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "data folder not found"),
        ("empty", "has no class sub-folders"),
        ("one_class", "only 1 class folder"),
        ("unreadable_class", "has no readable image"),
    ],
)
def test_bad_data_folders_fail_with_a_clear_message(tmp_path, layout, message) -> None:
    root = tmp_path / "d"
    if layout != "missing":
        root.mkdir()
    if layout in ("one_class", "unreadable_class"):
        (root / "a").mkdir()
        cv2.imwrite(str(root / "a" / "x.png"), np.zeros((4, 4, 3), np.uint8))
    if layout == "unreadable_class":
        (root / "b").mkdir()
        (root / "b" / "x.png").write_bytes(b"nope")
    with pytest.raises(SpermEdgeError, match=message):
        load_image_folder(root)


def test_real_smids_decodes_png_bmps_and_spaced_names(smids) -> None:
    data = load_image_folder(smids)
    assert len(data) == 3000 and not data.skipped
    assert data.classes == ["Abnormal_Sperm", "Non-Sperm", "Normal_Sperm"]
    assert any(" " in p.name for p in data.paths)
    assert len(set(data.pixel_hashes)) == 3000 - 49
