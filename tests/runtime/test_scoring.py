from __future__ import annotations

from sperm_edge.runtime.scoring import score_detections, score_events


def _truth() -> dict:
    cells = [
        {"id": 1, "box": [10, 10, 30, 30], "class": "Normal_Sperm", "partial": False},
        {"id": 2, "box": [60, 10, 80, 30], "class": "Abnormal_Sperm", "partial": False},
        {"id": 3, "box": [10, 60, 50, 100], "class": "Non-Sperm", "partial": False, "debris": True},
    ]
    return {"frames": [{"index": 0, "cells": cells}]}


def test_what_is_called_non_sperm_is_no_false_head_and_debris_called_sperm_is() -> None:
    events = [
        {"frame": 0, "box": [12, 12, 28, 28], "class": "Normal_Sperm"},
        {"frame": 0, "box": [20, 70, 40, 90], "class": "Non-Sperm"},  # debris, rightly rejected
        {"frame": 0, "box": [20, 70, 40, 90], "class": "Normal_Sperm"},  # debris counted as a head
        {"frame": 0, "box": [150, 150, 160, 160], "class": "Normal_Sperm"},  # on nothing: a tail, a fragment
        {"frame": 0, "box": [150, 10, 160, 20], "class": "Non-Sperm"},  # on nothing, and not counted as a head
    ]
    score = score_events(events, _truth())
    assert score["cells"] == 2 and score["counted"] == 1 and score["recall"] == 0.5  # debris is never required
    assert score["debris_rejected"] == 1 and score["rejected_off_cells"] == 1 and score["false_counts"] == 2
    assert score["precision"] == 1 / 3  # of the three events that are not rejected debris, one is a head
    assert score["class_agreement"] == 1.0 and score["double_counts"] == 0


def test_a_localiser_find_on_debris_is_counted_apart() -> None:
    cells = _truth()["frames"][0]["cells"]
    score = score_detections([[12, 12, 28, 28], [20, 70, 40, 90]], cells, (200, 200))
    assert score["cells"] == 2 and score["found"] == 1 and score["debris_finds"] == 1 and score["false_finds"] == 0


def test_explained_cells_score_where_their_heatmaps_peak_on_the_true_heads(tmp_path) -> None:
    import json

    from sperm_edge.runtime.scoring import explanations_on_heads

    (tmp_path / "explanations").mkdir()
    truth = {"frames": [{"index": 0, "cells": [{"id": 1, "box": [100, 100, 120, 130]},
                                               {"id": 2, "box": [300, 300, 320, 330], "debris": True}]}]}  # fmt: skip
    events = []
    for i, peak in enumerate(([0.5, 0.5], [0.05, 0.05], [0.5, 0.5])):  # on the head, off it, on debris
        name = f"explanations/{i:06d}"
        (tmp_path / f"{name}.json").write_text(json.dumps({"heat": {"peak": peak}}))
        box = [100, 100, 120, 130] if i < 2 else [300, 300, 320, 330]
        crop = [box[0] - 45, box[1] - 40, box[0] + 65, box[1] + 70]  # 110 px around the head
        events.append({"frame": 0, "box": box, "crop_box": crop, "explanation": f"{name}.png"})
    events.append({"frame": 0, "box": [100, 100, 120, 130], "crop_box": [0, 0, 1, 1]})  # never explained
    assert explanations_on_heads(events, truth, tmp_path) == {"explained": 2, "peak_on_head": 1, "share": 0.5}
    assert explanations_on_heads(events[3:], truth, tmp_path) is None
