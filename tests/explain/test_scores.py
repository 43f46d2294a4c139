from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.explain.scores import heat_in_mask, list_crops, pointing_hit, random_map, score_explanations


def test_heat_in_mask_and_pointing_on_known_maps() -> None:
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    inside = np.zeros((100, 100), np.float32)
    inside[45:55, 45:55] = 1.0
    assert heat_in_mask(inside, mask) == 1.0 and pointing_hit(inside, mask)
    half = np.ones((100, 100), np.float32)
    assert heat_in_mask(half, mask) == pytest.approx(0.04)
    corner = np.zeros((100, 100), np.float32)
    corner[2, 2] = 1.0
    assert not pointing_hit(corner, mask)
    near = np.zeros((100, 100), np.float32)
    near[40, 65] = 1.0  # 6 px off the mask: within the 15 px / 224 px tolerance? no: 6.7 px at 100 px
    assert pointing_hit(near, mask) and not pointing_hit(near, mask, tolerance=0)


def test_random_maps_score_the_mask_share_on_average() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True  # a quarter of the crop
    scores = [heat_in_mask(random_map(mask.shape, rng, 5), mask) for _ in range(400)]
    assert np.mean(scores) == pytest.approx(0.25, abs=0.02)


def test_score_explanations_reports_localisation_and_faithfulness(tiny_bundle: Path, masked_crops: Path) -> None:
    items = list_crops(masked_crops, limit=1)
    assert len(items) == 4 and all(mask is not None for _, _, mask in items)
    result = score_explanations(load_bundle(tiny_bundle).checkpoint_stem(), masked_crops, limit=1)
    assert result["crops"] == 4 and result["with_masks"] == 4
    for key in ("heat_in_mask", "heat_in_mask_random", "pointing", "pointing_random"):
        assert result[key]["n"] == 4 and 0.0 <= result[key]["mean"] <= 1.0
    for key in ("cam_mult_change", "road_keep20_change", "road_keep20_change_random"):
        assert result[key]["n"] == 4 and -1.0 <= result[key]["mean"] <= 1.0
    assert result["latency_ms"]["mean"] > 0


def test_stain_head_masks_find_the_synthetic_heads(masked_crops: Path) -> None:
    import cv2

    from sperm_edge.explain.scores import list_crops, stain_head_mask
    from sperm_edge.preprocess import decode_image

    ious = []
    for image, _cls, mask_path in list_crops(masked_crops):
        truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
        found = stain_head_mask(decode_image(image))
        ious.append((found & truth).sum() / max(1, (found | truth).sum()))
    assert np.median(ious) > 0.6, ious


def test_centre_prior_peaks_at_the_centre() -> None:
    from sperm_edge.explain.scores import centre_prior

    prior = centre_prior((41, 31), 0.1)
    assert np.unravel_index(int(prior.argmax()), prior.shape) == (20, 15) and prior.max() == 1.0
    assert centre_prior((41, 31), 0.3)[0, 0] > prior[0, 0]


def reference_mean_ci(values: list[float]) -> dict:
    """The former interval: mean +- 1.96 standard errors."""
    arr = np.asarray(values, dtype=np.float64)
    half = 1.96 * arr.std(ddof=1) / np.sqrt(arr.size) if arr.size > 1 else 0.0
    return {
        "mean": round(float(arr.mean()), 4),
        "ci95": [round(float(arr.mean() - half), 4), round(float(arr.mean() + half), 4)],
        "n": int(arr.size),
    }


@pytest.mark.parametrize("seed", range(20))
def test_mean_ci_equals_the_former_interval(seed: int) -> None:
    from sperm_edge.explain.scores import mean_ci

    rng = np.random.default_rng(seed)
    values = rng.random(int(rng.integers(1, 400))).tolist()
    if seed == 0:
        values = [0.5] * 7  # no spread: a point interval
    new, old = mean_ci(values), reference_mean_ci(values)
    assert new["mean"] == old["mean"] and new["n"] == old["n"]
    # scipy's quantile is 1.959964, not 1.96: the bounds agree to the 4th decimal they are rounded to
    assert new["ci95"] == pytest.approx(old["ci95"], abs=1.5e-4)
    assert mean_ci([]) == {"mean": None, "ci95": None, "n": 0}


@pytest.mark.parametrize(
    ("pointing", "share", "words"),
    [(1.0, 0.6, "maps find the head"), (0.92, 0.35, "mostly find the head"), (1.0, 0.28, "little more than where")],
)
def test_heatmap_trust_names_the_drawn_maps_and_grades_them_by_both_bars(pointing, share, words) -> None:
    from sperm_edge.explain.scores import heatmap_trust

    section = {"engine": True, "method": "Grad-CAM++", "layer": "attention (CBAM)", "maps": "cam",
               "pointing": pointing, "heat_share": share, "heat_share_centre_matched": 0.3,
               "quality": {"pointing": {"n": 40}}}  # fmt: skip
    trust = heatmap_trust(section)
    assert trust["method"] == "Grad-CAM++" and words in trust["verdict"] and "40 validation crops" in trust["verdict"]
    assert heatmap_trust({"engine": True, "method": "Grad-CAM++"})["verdict"] is None  # nothing measured
    assert heatmap_trust({"engine": False}) is None
