"""The real-cell bench: sprites cut from real crops, slides and clips composed from them, their ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sperm_edge.data.real_fields import RealFieldVideo, make_sprite
from sperm_edge.data.real_fields.sprites import head_mask
from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import decode_image


def test_a_hushem_crop_gives_a_centred_head_with_a_box_from_its_stain(hushem: Path) -> None:
    path = sorted((hushem / "01_Normal").iterdir())[0]
    rgb = decode_image(path)
    sprite = make_sprite(rgb, "01_Normal", path.relative_to(hushem.parent), debris=False, head_width=28.0)
    assert sprite is not None and sprite.source.startswith("hushem/01_Normal/")
    h, w = rgb.shape[:2]
    cx, cy = sprite.center
    assert abs(cx - w / 2) < 0.2 * w and abs(cy - h / 2) < 0.2 * h  # the sets are head-centred
    x0, y0, x1, y1 = sprite.head_box
    assert x0 <= cx <= x1 and y0 <= cy <= y1
    assert 15 <= np.sqrt(sprite.head.sum()) <= 45  # a head, not the whole cell or a speck
    assert sprite.alpha.max() <= 1.0 + 1e-5 and sprite.alpha[sprite.head > 0].min() > 0.5
    assert np.abs(sprite.density[sprite.alpha < 0.01]).mean() < 0.1  # the glass carries no density
    assert (head_mask(rgb) > 0).sum() > 0


def test_a_clip_of_real_cells_has_stable_ids_debris_and_boxes_in_the_frame(smids: Path) -> None:
    video = RealFieldVideo(smids.parent, cells=10, frames=6, seed=5, style="smids", size=(480, 360))
    again = RealFieldVideo(smids.parent, cells=10, frames=6, seed=5, style="smids", size=(480, 360))
    assert np.array_equal(video.frame(3), again.frame(3))  # deterministic for the seed
    truth = video.ground_truth()
    assert truth["kind"] == "real-field" and len(truth["frames"]) == 6
    cells = truth["cells"]
    assert sum(not c["debris"] for c in cells.values()) == 10
    assert any(c["debris"] and c["class"] == "Non-Sperm" for c in cells.values())
    assert {c["class"] for c in cells.values() if not c["debris"]} <= {"Abnormal_Sperm", "Normal_Sperm"}
    for frame in truth["frames"]:
        for cell in frame["cells"]:
            x0, y0, x1, y1 = cell["box"]
            assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 360
            assert cells[str(cell["id"])]["class"] == cell["class"]
    moved = np.array(truth["frames"][-1]["offset"]) - np.array(truth["frames"][0]["offset"])
    assert np.abs(moved).sum() > 0  # the stage pans


def test_bad_styles_and_folders_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(SpermEdgeError, match="unknown real-field style"):
        RealFieldVideo(tmp_path, style="mouse")
    with pytest.raises(SpermEdgeError, match="data folder not found"):
        RealFieldVideo(tmp_path / "nowhere")
    with pytest.raises(SpermEdgeError, match="has no hushem/ set"):
        RealFieldVideo(tmp_path)
    (tmp_path / "hushem" / "01_Normal").mkdir(parents=True)
    with pytest.raises(SpermEdgeError, match="lacks the class folder"):
        RealFieldVideo(tmp_path)


def test_cell_alone_keeps_the_head_and_clears_the_rest_to_the_crops_glass(smids: Path) -> None:
    from sperm_edge.data.real_fields.sprites import cell_alone, render

    rgb = decode_image(sorted((smids / "Abnormal_Sperm").iterdir())[0])
    sprite = make_sprite(rgb, "Abnormal_Sperm", "x.bmp", debris=False, head_width=0.2 * min(rgb.shape[:2]))
    alone = cell_alone(rgb)
    assert alone is not None and np.array_equal(alone, render(sprite, sprite.background))
    inner = (sprite.head > 0) & (sprite.alpha > 0.99)
    assert np.abs(alone[inner].astype(int) - rgb[inner].astype(int)).mean() < 3  # the head as it was
    empty = sprite.alpha < 1e-3
    assert np.abs(alone[empty].astype(float) - sprite.background).max() <= 1  # flat glass elsewhere
    assert cell_alone(np.full((120, 120, 3), 230, np.uint8)) is None  # no head: nothing to cut


def test_each_look_departs_from_the_plain_field_in_its_own_condition(smids: Path) -> None:
    from sperm_edge.data.real_fields.looks import HELD_OUT_LOOK, LOOKS

    def field(look: str) -> RealFieldVideo:
        return RealFieldVideo(smids.parent, cells=8, frames=1, seed=3, style="smids", size=(320, 240), look=look)

    plain = field("plain")
    assert HELD_OUT_LOOK in LOOKS and plain.ground_truth()["look"] == "plain"
    assert np.array_equal(plain.frame(0), RealFieldVideo(smids.parent, 8, 1, 3, "smids", (320, 240)).frame(0))
    widths = {}
    for name in LOOKS:
        video = field(name)
        truth = video.ground_truth()
        assert truth["look"] == name and sum(not c["debris"] for c in truth["cells"].values()) >= 3
        assert name == "plain" or not np.array_equal(video.frame(0), plain.frame(0))
        boxes = np.array([c["box"] for c in truth["cells"].values() if not c["debris"]])
        widths[name] = float(np.median(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))))
    assert widths["zoom-out"] < 0.8 * widths["plain"] < widths["plain"] * 1.0 < 0.8 * widths["zoom-in"]
    touching = {name: np.mean([c["touching"] for c in field(name).ground_truth()["cells"].values()])
                for name in ("plain", "dense")}  # fmt: skip
    assert touching["dense"] > touching["plain"]
    with pytest.raises(SpermEdgeError, match="unknown field look"):
        field("sepia")
