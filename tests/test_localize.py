from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sperm_edge.localize import LocalizerConfig, crop, find_cells, isolate, whole_frame
from sperm_edge.preprocess import decode_image
from sperm_edge.runtime.scoring import score_detections


def test_cell_finding_recall_on_synthetic_fields(fields: list[Path]) -> None:
    totals = {"cells": 0, "found": 0, "false_finds": 0, "duplicates": 0}
    for path in fields:
        truth = json.loads(path.with_suffix(".json").read_text())
        image = decode_image(path)
        boxes = [d.head_box for d in find_cells(image)]
        score = score_detections(boxes, truth["cells"], (image.shape[1], image.shape[0]))
        for key in totals:
            totals[key] += score[key]
    assert totals["cells"] >= 20
    assert totals["found"] / totals["cells"] >= 0.9, totals
    assert totals["false_finds"] <= 0.1 * totals["cells"] and totals["duplicates"] == 0, totals


def test_crops_are_square_at_the_training_scale_and_padded_at_the_edge(fields: list[Path]) -> None:
    image = decode_image(fields[0])
    cfg = LocalizerConfig(crop_scale=4.0)
    found = find_cells(image, cfg)
    side = max(16, round(4.0 * np.median([np.sqrt(d.area) for d in found])))  # one scale for the whole field
    for det in found:
        x0, y0, x1, y1 = det.crop_box
        assert x1 - x0 == y1 - y0 == side
        assert abs((x0 + x1) / 2 - det.center[0]) <= 1 and abs((y0 + y1) / 2 - det.center[1]) <= 1
        assert crop(image, det.crop_box).shape == (y1 - y0, x1 - x0, 3)
    fixed = find_cells(image, LocalizerConfig(crop_size=100))
    assert all(d.crop_box[2] - d.crop_box[0] == 100 for d in fixed)


def test_crop_replicates_the_border_outside_the_frame() -> None:
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    out = crop(image, (-2, -1, 3, 4))
    assert out.shape == (5, 5, 3)
    assert (out[0, 0] == image[0, 0]).all() and (out[1:, 2:] == image[0:4, 0:3]).all()


def test_an_empty_slide_has_no_cells_and_crop_mode_takes_the_whole_frame() -> None:
    rng = np.random.default_rng(0)
    empty = np.clip(rng.normal((230, 170, 200), 2, (240, 320, 3)), 0, 255).astype(np.uint8)
    assert find_cells(empty) == []
    det = whole_frame(empty)
    assert det.crop_box == det.head_box == (0, 0, 320, 240)


def test_the_bundle_framing_sets_the_crop_scale_unless_overridden() -> None:
    framing = {"head_width_px": 28.2, "crop_side_px": 131.0, "crop_scale": 4.64}
    assert LocalizerConfig.framed(framing).crop_scale == 4.64
    assert LocalizerConfig.framed(framing, crop_scale=5.0).crop_scale == 5.0
    assert LocalizerConfig.framed(None).crop_scale == 4.6 and LocalizerConfig.framed({}, crop_size=90).crop_size == 90


def test_recall_on_small_fields_composed_from_real_crops(hushem: Path, smids: Path) -> None:
    from sperm_edge.data.real_fields import RealFieldVideo

    totals = {"cells": 0, "found": 0, "false_finds": 0, "duplicates": 0}
    for style in ("hushem", "smids"):
        for seed in (7, 8):  # not the benchmark's seeds
            video = RealFieldVideo(hushem.parent, cells=14, frames=1, seed=seed, style=style, size=(640, 480))
            image, truth = video.frame(0), video.truth(0)
            boxes = [d.head_box for d in find_cells(image)]
            score = score_detections(boxes, truth["cells"], (640, 480))
            for key in totals:
                totals[key] += score[key]
    # measured 0.86 (48 of 56) when written, 0.875 (49) since blobs split less readily (split_solidity 0.8),
    # 0.91 (51, with 4 duplicates: 2 long single SMIDS heads cut) since overlapping pairs are cut in two;
    # the localiser tuned on synthetic stain found about half
    assert totals["found"] / totals["cells"] >= 0.85, totals
    assert totals["false_finds"] <= 2 and totals["duplicates"] <= 4, totals


def heads_at(xs: tuple[int, ...], width: int = 260) -> np.ndarray:
    """Pink glass with stained heads (18 x 28 px ellipses) centred at `xs` on one row."""
    import cv2

    image = np.full((200, width, 3), (215, 195, 220), np.uint8)
    image = cv2.subtract(image, np.random.default_rng(0).integers(0, 6, image.shape, dtype=np.uint8))
    for x in xs:
        cv2.ellipse(image, (x, 100), (14, 9), 90, 0, 360, (110, 50, 140), -1)
    return cv2.GaussianBlur(image, (0, 0), 1.0)


def two_heads(gap: int) -> np.ndarray:
    """Two heads `gap` px apart (centre to centre), side by side."""
    return heads_at((100, 100 + gap))


def test_an_overlapping_pair_is_cut_in_two_at_its_notches() -> None:
    image = heads_at((40, 100, 116, 260), width=320)  # the middle two overlap: one convex blob
    as_one = find_cells(image, LocalizerConfig(pair_area=(99.0, 99.0)))
    assert [round(d.center[0]) for d in as_one] == [39, 107, 260]
    found = sorted(find_cells(image), key=lambda d: d.center[0])
    assert np.allclose([d.center[0] for d in found], [40, 100, 116, 260], atol=4)
    left, right = found[1:3]
    assert left.head_box[2] <= right.head_box[2] and abs(left.area - right.area) < 0.2 * left.area
    assert len({d.crop_box[2] - d.crop_box[0] for d in found}) == 1  # one crop scale for the field


def test_isolate_paints_the_neighbour_out_of_a_crop_and_keeps_the_cell() -> None:
    image = two_heads(gap=44)
    found = sorted(find_cells(image), key=lambda d: d.center[0])
    assert len(found) == 2 and all(d.outline is not None for d in found)
    left, right = found
    x0, y0, x1, y1 = left.head_box
    assert all(x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1 for x, y in left.outline[:, 0])
    patch = crop(image, left.crop_box)
    alone = isolate(patch, left, found)
    cx0, cy0 = left.crop_box[:2]
    glass = np.median(image[:40, :40].reshape(-1, 3), axis=0)
    on_right = alone[100 - cy0 - 5 : 100 - cy0 + 5, 144 - cx0 - 3 : 144 - cx0 + 3]
    assert np.abs(on_right.astype(float) - glass).max() < 15  # the neighbour's head is glass now
    on_left = (slice(100 - cy0 - 5, 100 - cy0 + 5), slice(100 - cx0 - 3, 100 - cx0 + 3))
    assert np.array_equal(alone[on_left], patch[on_left])  # the cell's own head is untouched
    assert isolate(patch, left, [left]) is patch  # nobody else in the crop: as it was


def test_real_smear_fields_find_the_heads_whole_and_drop_the_specks() -> None:
    """Real stained smears (issue 47): specks of debris outnumber the heads; the head scale comes from the heads, the
    specks are dropped, and the box takes in the pale acrosome (the truth's box: vacuole, acrosome and nucleus)."""
    import pytest

    from sperm_edge.data.smears import is_smear_folder, load_smears
    from sperm_edge.data.truth import box_iou
    from tests.conftest import SHARED_DATA

    if not is_smear_folder(SHARED_DATA / "smears"):
        pytest.skip("real smear fields not found")
    fields = load_smears(SHARED_DATA / "smears")[::32]
    ious, finds = [], 0
    for field in fields:
        found = find_cells(decode_image(field.path))
        finds += len(found)
        ious += [max((box_iou(d.head_box, c["box"]) for d in found), default=0.0) for c in field.cells
                 if not c["partial"]]  # fmt: skip
    ious = np.array(ious)
    assert len(ious) >= 80
    assert (ious >= 0.3).mean() >= 0.93, ious
    assert (ious >= 0.5).mean() >= 0.9, ious
    assert finds <= 1.6 * len(ious)  # without the speck rule: more than four finds a head
