"""The offline synthetic generator: determinism, masks, field and video ground truth, CLI, colour baseline."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sperm_edge.cli import main
from sperm_edge.data.synthetic import (
    MASKS_DIR,
    STYLES,
    SyntheticVideo,
    polygon_mask,
    render_cell,
    render_field,
    write_crop_dataset,
    write_video,
)
from sperm_edge.errors import SpermEdgeError

ALL_CLASSES = [(style, cls) for style, st in STYLES.items() for cls in st.classes]


def _read_png(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize(("style", "cls"), ALL_CLASSES)
def test_render_cell_is_deterministic_for_a_seed(style: str, cls: str) -> None:
    a_img, a_mask = render_cell(np.random.default_rng(7), cls, style)
    b_img, b_mask = render_cell(np.random.default_rng(7), cls, style)
    c_img, _ = render_cell(np.random.default_rng(8), cls, style)
    assert a_img.dtype == np.uint8 and a_img.ndim == 3 and a_img.shape[2] == 3
    assert a_mask.dtype == bool and a_mask.shape == a_img.shape[:2]
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    assert a_img.shape != c_img.shape or not np.array_equal(a_img, c_img)


def test_crop_sizes_follow_the_real_sets() -> None:
    rng = np.random.default_rng(0)
    assert render_cell(rng, "01_Normal", "hushem")[0].shape == (131, 131, 3)
    sizes = {render_cell(rng, "Normal_Sperm", "smids")[0].shape[:2] for _ in range(8)}
    assert len(sizes) > 1
    assert all(100 <= h <= 264 and 122 <= w <= 259 for h, w in sizes)
    assert render_cell(rng, "Non-Sperm", "smids", size=(90, 70))[0].shape == (70, 90, 3)


@pytest.mark.parametrize(("style", "cls"), ALL_CLASSES)
def test_mask_covers_the_centred_stained_head(style: str, cls: str) -> None:
    for seed in range(4):
        image, mask = render_cell(np.random.default_rng(seed), cls, style)
        h, w = mask.shape
        grey = image.astype(np.float32).mean(axis=2)
        assert 150 < mask.sum() < 0.35 * h * w
        # the head is stained: clearly darker than the background (median of the crop); debris
        # (round cells with pale cytoplasm) is darker in its nucleus at least
        background = np.median(grey[~mask])
        assert np.percentile(grey[mask], 10) < background - 40
        assert grey[mask].mean() < background - (15 if cls == "Non-Sperm" else 40)
        # and it is the centred cell
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - w / 2) < 0.15 * w and abs(ys.mean() - h / 2) < 0.15 * h


def test_unknown_class_and_style_name_the_valid_ones() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(SpermEdgeError, match="valid: 01_Normal, 02_Tapered"):
        render_cell(rng, "Normal_Sperm", "hushem")
    with pytest.raises(SpermEdgeError, match="valid: hushem, smids"):
        render_cell(rng, "01_Normal", "kaggle")


@pytest.mark.parametrize("style", ["hushem", "smids"])
def test_field_ground_truth_boxes_hold_their_heads_and_do_not_overlap(style: str) -> None:
    size = (640, 480)
    image, cells = render_field(np.random.default_rng(3), style, size, n_cells=14)
    again, _ = render_field(np.random.default_rng(3), style, size, n_cells=14)
    assert image.shape == (480, 640, 3) and np.array_equal(image, again)
    assert 10 <= len(cells) <= 14
    json.dumps(cells)  # JSON-able as it is
    grey = image.astype(np.float32).mean(axis=2)
    background = np.median(grey)
    for cell in cells:
        assert cell["class"] in STYLES[style].classes
        x0, y0, x1, y1 = cell["box"]
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
        mask = polygon_mask(cell["polygons"], size)
        assert mask.sum() == cell["area_px"] > 0
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)  # tight box
        assert grey[mask].mean() < background - 25
    boxes = np.array([c["box"] for c in cells])
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (cells[i]["id"], cells[j]["id"])


def test_write_crop_dataset_layout_masks_and_refusal(tmp_path: Path) -> None:
    out = tmp_path / "synth set"
    assert write_crop_dataset(out, 10, "hushem", seed=5) == out
    classes = STYLES["hushem"].classes
    assert sorted(p.name for p in out.iterdir()) == sorted([*classes, MASKS_DIR, "_synthetic.json"])
    images = sorted(p.relative_to(out) for p in out.glob("0*/*.png"))
    masks = sorted(p.relative_to(out / MASKS_DIR) for p in (out / MASKS_DIR).glob("*/*.png"))
    assert len(images) == 10 and images == masks
    assert json.loads((out / "_synthetic.json").read_text())["classes"] == {
        "01_Normal": 3, "02_Tapered": 3, "03_Pyriform": 2, "04_Amorphous": 2,
    }  # fmt: skip
    mask = _read_png(out / MASKS_DIR / images[0])
    assert mask.ndim == 2 and set(np.unique(mask)) == {0, 255}
    assert _read_png(out / images[0]).shape == (131, 131, 3)

    with pytest.raises(SpermEdgeError, match="synth set already exists"):
        write_crop_dataset(out, 4, "hushem", seed=5)
    first = (out / images[0]).read_bytes()
    write_crop_dataset(out, 10, "hushem", seed=5, force=True)
    assert (out / images[0]).read_bytes() == first  # same seed, same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth set"]  # no temporary leftovers


def test_video_ids_are_stable_and_boxes_follow_the_pan() -> None:
    args = {"frames": 40, "seed": 2, "size": (320, 240), "speed": 8.0, "cells_per_frame": 12}
    video = SyntheticVideo(**args)
    truth = video.ground_truth()
    json.dumps(truth)
    assert truth["size"] == [320, 240] and len(truth["frames"]) == 40
    assert np.array_equal(video.frame(5), SyntheticVideo(**args).frame(5))
    moved = 0
    for prev, cur in zip(truth["frames"], truth["frames"][1:], strict=False):
        shift = np.subtract(cur["offset"], prev["offset"])
        moved += int(np.any(shift))
        before = {c["id"]: c for c in prev["cells"] if not c["partial"]}
        for c in cur["cells"]:
            assert c["class"] == truth["cells"][str(c["id"])]["class"]
            if not c["partial"] and c["id"] in before:
                expected = np.subtract(before[c["id"]]["box"], np.tile(shift, 2))
                assert c["box"] == expected.tolist()
    assert moved > 10  # the stage really moves
    seen = {c["id"] for f in truth["frames"] for c in f["cells"] if not c["partial"]}
    assert len(seen) > len(truth["frames"][0]["cells"])  # new cells come into view
    # the frame at a cell's box shows its stained head
    frame, gt = video.frame(20).astype(np.float32).mean(axis=2), truth["frames"][20]
    for c in (c for c in gt["cells"] if not c["partial"]):
        x0, y0, x1, y1 = c["box"]
        assert frame[y0:y1, x0:x1].min() < np.median(frame) - 40


def test_write_video_opens_with_the_right_frame_count(tmp_path: Path) -> None:
    out = write_video(tmp_path / "pan.mp4", frames=12, seed=1, size=(256, 192), fps=10.0)
    cap = cv2.VideoCapture(str(out))
    try:
        assert cap.isOpened()
        count = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (192, 256, 3)
            count += 1
    finally:
        cap.release()
    assert count == 12
    truth = json.loads(out.with_suffix(".json").read_text())
    assert truth["fps"] == 10.0 and truth["size"] == [256, 192] and len(truth["frames"]) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pan.json", "pan.mp4"]
    with pytest.raises(SpermEdgeError, match="pan.mp4 already exists"):
        write_video(out, frames=2)


def test_cli_synth_writes_and_refuses_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crops"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", str(out), "--n", "6", "--style", "smids", "--seed", "1"])
    assert exit_info.value.code == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([MASKS_DIR, *STYLES["smids"].classes])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", str(out), "--n", "6"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crops already exists" in err and "--force" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", str(out), "--n", "4", "--force"])
    assert exit_info.value.code == 0
    assert len(list(out.glob("0*/*.png"))) == 4


def test_cli_synth_video_and_field(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth-video", "--out", str(video), "--frames", "5", "--width", "192", "--height", "128"])
    assert exit_info.value.code == 0
    assert json.loads(video.with_suffix(".json").read_text())["size"] == [192, 128]
    field = tmp_path / "field.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth-field", "--out", str(field), "--cells", "6", "--width", "400", "--height", "300"])
    assert exit_info.value.code == 0
    assert _read_png(field).shape == (300, 400, 3)
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth-video", "--out", str(tmp_path / "clip.avi"), "--frames", "2"])
    assert exit_info.value.code == 2


@pytest.fixture(scope="module")
def hushem_crops() -> tuple[list[np.ndarray], np.ndarray]:
    """320 HuSHeM-style crops, classes interleaved (crop i has class i mod 4)."""
    classes = STYLES["hushem"].classes
    images = [render_cell(np.random.default_rng([11, i]), classes[i % 4], "hushem")[0] for i in range(320)]
    return images, np.arange(320) % 4


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray, n_train: int) -> float:
    train = np.arange(len(y)) < n_train
    centroids = np.stack([x[train & (y == k)].mean(axis=0) for k in range(4)])
    pred = np.argmin(((x[~train, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    return float((pred == y[~train]).mean())


def _colour_histogram(image: np.ndarray, bins: int = 8) -> np.ndarray:
    q = (image.reshape(-1, 3) // (256 // bins)).astype(np.int64)
    h = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins**3).astype(np.float64)
    return np.sqrt(h / h.sum())


def _shape_features(image: np.ndarray) -> np.ndarray:
    """Elongation, solidity, roundness and skew (pear-ness) of the dark blob nearest the centre."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    _, dark = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))  # drops tails
    n, labels, _, centres = cv2.connectedComponentsWithStats(dark)
    if n < 2:
        return np.zeros(4)
    k = 1 + int(np.argmin(np.hypot(*(centres[1:] - np.array(grey.shape[::-1]) / 2).T)))
    contour = max(cv2.findContours((labels == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0],
                  key=cv2.contourArea)  # fmt: skip
    area = max(cv2.contourArea(contour), 1.0)
    ys, xs = np.nonzero(labels == k)
    pts = np.stack([xs - xs.mean(), ys - ys.mean()], axis=1)
    evals, evecs = np.linalg.eigh(np.cov(pts.T))
    along = pts @ evecs[:, 1]
    return np.array([
        np.sqrt(evals[1] / max(evals[0], 1e-6)),
        area / max(cv2.contourArea(cv2.convexHull(contour)), 1.0),
        cv2.arcLength(contour, True) ** 2 / area,
        abs(np.mean(along**3)) / (np.std(along) ** 3 + 1e-9),
    ])  # fmt: skip


def test_classes_are_not_separable_by_colour_alone(hushem_crops: tuple[list[np.ndarray], np.ndarray]) -> None:
    """Nearest class centroid on colour histograms must stay near chance (25% for 4 classes)."""
    images, labels = hushem_crops
    accuracy = _nearest_centroid_accuracy(np.array([_colour_histogram(im) for im in images]), labels, 160)
    assert accuracy < 0.45, f"colour alone separates the classes: {accuracy:.0%}"


def test_classes_are_separable_by_head_shape(hushem_crops: tuple[list[np.ndarray], np.ndarray]) -> None:
    """The class lives in the head's shape: four shape features of the segmented head beat chance by far."""
    images, labels = hushem_crops
    x = np.array([_shape_features(im) for im in images])
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    accuracy = _nearest_centroid_accuracy(x, labels, 160)
    assert accuracy > 0.6, f"head shape does not tell the classes apart: {accuracy:.0%}"
