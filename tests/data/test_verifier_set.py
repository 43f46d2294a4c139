"""The head verifier's training folder: heads, debris and the five kinds of real-crop pieces that are not heads."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from sperm_edge.data.synthetic import write_crop_dataset
from sperm_edge.data.verifier_set import HEAD, NEGATIVE_KINDS, NOT_HEAD, make_negative, write_verifier_set
from sperm_edge.errors import SpermEdgeError
from sperm_edge.explain.scores import stain_head_mask
from sperm_edge.preprocess import decode_image


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("verifier-root")
    write_crop_dataset(base / "hushem", 12, "hushem", seed=1)
    write_crop_dataset(base / "smids", 12, "smids", seed=2)
    return base


def test_the_folder_holds_heads_debris_and_every_kind_of_piece(root: Path, tmp_path: Path) -> None:
    counts = write_verifier_set(root, tmp_path / "set", seed=0, fields=0)
    heads = sorted((tmp_path / "set" / HEAD).glob("*.png"))
    others = sorted((tmp_path / "set" / NOT_HEAD).glob("*.png"))
    # all HuSHeM crops and SMIDS's normal and abnormal ones, a third of them again as cut at the frame's edge
    assert counts[HEAD] == len(heads) == (12 + 4) + (8 + 3)
    assert counts[f"{NOT_HEAD}:debris"] == 4  # SMIDS's Non-Sperm
    assert sum(v for k, v in counts.items() if k.startswith(NOT_HEAD)) == len(others)
    assert all(counts[f"{NOT_HEAD}:{kind}"] > 0 for kind in NEGATIVE_KINDS)
    with open(tmp_path / "set" / "sources.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(heads) + len(others)
    assert all((root / row["source"]).is_file() and (tmp_path / "set" / row["image"]).is_file() for row in rows)
    with pytest.raises(SpermEdgeError, match="already exists"):
        write_verifier_set(root, tmp_path / "set", fields=0)


def test_its_slides_take_every_look_but_the_held_out_one_in_turn(root: Path, tmp_path: Path, monkeypatch) -> None:
    from sperm_edge.data import verifier_set
    from sperm_edge.data.real_fields.looks import HELD_OUT_LOOK, LOOKS

    asked = []
    monkeypatch.setattr(verifier_set, "field_crops", lambda root, style, seed, look: asked.append((style, look)) or [])
    write_verifier_set(root, tmp_path / "set", fields=len(verifier_set.FIELD_LOOKS) + 1)
    assert set(verifier_set.FIELD_LOOKS) == set(LOOKS) - {HELD_OUT_LOOK}
    for style in ("hushem", "smids"):  # in turn, from the plain look
        looks = [look for name, look in asked if name == style]
        assert looks == [*verifier_set.FIELD_LOOKS, "plain"]


def test_pieces_keep_the_crop_size_and_move_the_head_off_centre(root: Path) -> None:
    rng = np.random.default_rng(0)
    crop = decode_image(sorted((root / "hushem").glob("*/*.png"))[0])
    h, w = crop.shape[:2]
    centre = stain_head_mask(crop)[h // 2 - 3 : h // 2 + 3, w // 2 - 3 : w // 2 + 3].mean()
    assert centre > 0.5  # the head crop is head-centred
    for kind in NEGATIVE_KINDS:
        piece = make_negative(kind, crop, crop, rng)
        assert piece is not None and piece.shape == crop.shape and piece.dtype == np.uint8, kind
        if kind in ("tail", "glass"):
            middle = stain_head_mask(piece)[h // 2 - 3 : h // 2 + 3, w // 2 - 3 : w // 2 + 3]
            assert middle.mean() < 0.5, kind  # no head at the centre any more
        if kind == "edge":
            assert (piece.max(axis=2) == 0).mean() >= 0.5  # three quarters beyond the scan, black


def test_a_head_at_the_frame_edge_keeps_its_size_and_replicates_the_last_pixels(root: Path) -> None:
    from sperm_edge.data.verifier_set import at_frame_edge

    crop = decode_image(sorted((root / "hushem").glob("*/*.png"))[0])
    for seed in range(8):
        edged = at_frame_edge(crop, np.random.default_rng(seed))
        assert edged.shape == crop.shape
        flat = [np.ptp(edged[:, :3].astype(int), axis=1).max(), np.ptp(edged[:, -3:].astype(int), axis=1).max(),
                np.ptp(edged[:3].astype(int), axis=0).max(), np.ptp(edged[-3:].astype(int), axis=0).max()]  # fmt: skip
        assert min(flat) == 0  # one side's outer band is a copy of a single row or column


def test_real_field_objects_are_cut_as_the_runtime_cuts_them_and_labelled_by_the_truth(smids: Path) -> None:
    from sperm_edge.data.verifier_set import FIELD_SEED0, field_crops

    found = field_crops(smids.parent, "smids", FIELD_SEED0, frames=2)
    kinds = {kind for kind, _ in found}
    assert HEAD in kinds and "fielddebris" in kinds  # SMIDS fields carry Non-Sperm debris
    assert all(crop.ndim == 3 and crop.shape[0] == crop.shape[1] and crop.dtype == np.uint8 for _, crop in found)


def test_a_folder_without_the_real_sets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpermEdgeError, match="neither hushem/ nor smids/"):
        write_verifier_set(tmp_path, tmp_path / "out")
