"""Check a run against ground truth: did it find every cell, and count each one once?

Used with the synthetic fields and panning clips of `sperm_edge.data.synthetic` and the real-cell
bench of `sperm_edge.data.real_fields`, whose ground truth lists every head's box per frame with a
stable cell id. An event or detection matches the ground-truth head whose box contains its centre
(`data.truth.match_box`: a few pixels of tolerance; the largest overlap wins when two do).

Real-cell clips also list debris (``"debris": true``, class ``Non-Sperm``): it is never required.
An event on debris that the model calls by the debris' class (a SMIDS bundle's ``Non-Sperm``) is
right and left out of precision; any other event on debris is a false head, as is an event on no
object at all (a tail, a fragment, the background) that the model calls a sperm class. An event on
no object that the model calls not sperm is not counted as a head either (the report leaves
``Non-Sperm`` out of its counts and of % normal): it is left out of precision and counted in
``rejected_off_cells``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sperm_edge.data.presets import NON_SPERM
from sperm_edge.data.truth import TOLERANCE, match_box

POINTING_TOLERANCE = 15 / 224  # the pointing game's slack, a fraction of the crop (`explain.scores.pointing_hit`)


def score_detections(boxes: Sequence[Sequence[float]], cells: Sequence[dict], frame_size: tuple[int, int]) -> dict:
    """Recall and false finds of head boxes in one field; cells cut by the frame edge and debris are not required.

    A box on debris is counted in `debris_finds` (the localiser cannot know it is debris; the classifier may).
    """
    w, h = frame_size
    required = {
        c["id"] for c in cells
        if c["box"][0] > TOLERANCE and c["box"][1] > TOLERANCE and c["box"][2] < w - TOLERANCE
        and c["box"][3] < h - TOLERANCE and not c.get("debris")
    }  # fmt: skip
    found, duplicates, false, debris = set(), 0, 0, 0
    for box in boxes:
        cell = match_box(box, cells)
        if cell is None:
            false += 1
        elif cell.get("debris"):
            debris += 1
        elif cell["id"] in found:
            duplicates += 1
        else:
            found.add(cell["id"])
    return {
        "cells": len(required),
        "found": len(found & required),
        "recall": len(found & required) / len(required) if required else 1.0,
        "duplicates": duplicates,
        "false_finds": false,
        "debris_finds": debris,
    }


def score_events(events: Sequence[dict], truth: dict) -> dict:
    """Compare a run's events (one per counted cell) with a clip's ground truth.

    `recall`: share of the cells (not debris) seen whole in at least one frame that were counted;
    `double_counts`: events on a cell that an earlier event already counted; `false_counts`: events
    on debris called a sperm class, or on no cell called a sperm class; `debris_rejected`: events on
    debris called by its own class; `rejected_off_cells`: events on no cell called not sperm (both left
    out of `precision`, the share of the other events that lie on a cell); `class_agreement`: events
    whose class is the truth's class.
    """
    frames = {f["index"]: f["cells"] for f in truth["frames"]}
    countable = {c["id"] for cells in frames.values() for c in cells if not c.get("partial") and not c.get("debris")}
    counted: dict[int, int] = {}
    doubles = false = agree = rejected = off_cells = 0
    for event in events:
        cell = match_box(event["box"], frames.get(event["frame"], []))
        if cell is not None and cell.get("debris"):
            if event.get("class") == cell.get("class"):
                rejected += 1
            else:
                false += 1
            continue
        if cell is None:
            if NON_SPERM.search(str(event.get("class", ""))):
                off_cells += 1
            else:
                false += 1
            continue
        if cell["id"] in counted:
            doubles += 1
        counted[cell["id"]] = counted.get(cell["id"], 0) + 1
        agree += int(event.get("class") == cell.get("class"))
    matched = len(set(counted) & countable)
    scored = len(events) - rejected - off_cells
    return {
        "cells": len(countable),
        "counted": matched,
        "recall": matched / len(countable) if countable else 1.0,
        "events": len(events),
        "precision": (scored - false) / scored if scored else 1.0,
        "double_counts": doubles,
        "double_count_rate": doubles / max(1, len(counted)),
        "false_counts": false,
        "debris_rejected": rejected,
        "rejected_off_cells": off_cells,
        "class_agreement": agree / max(1, scored - false),
    }


def explanations_on_heads(events: Sequence[dict], truth: dict, run_dir: Path) -> dict | None:
    """Where the explained cells' heatmaps peak, against the clip's true head boxes (the pointing game on a run).

    For each event with an explanation (`ID.json` beside its PNG, whose `heat.peak` is a fraction of the
    crop) on a true head: the peak mapped through the event's `crop_box` into the frame, a hit when it lies
    on the head's box within the pointing game's tolerance (15 px per 224 px of crop). None when no
    explained event lies on a head.
    """
    frames = {f["index"]: f["cells"] for f in truth["frames"]}
    hits = explained = 0
    for event in events:
        path = run_dir / str(event.get("explanation", ""))
        if not event.get("explanation") or "crop_box" not in event or not path.with_suffix(".json").is_file():
            continue
        cell = match_box(event["box"], frames.get(event["frame"], []))
        if cell is None or cell.get("debris"):
            continue
        peak = json.loads(path.with_suffix(".json").read_text())["heat"]["peak"]
        x0, y0, x1, y1 = event["crop_box"]
        x, y = x0 + peak[0] * (x1 - x0), y0 + peak[1] * (y1 - y0)
        slack = POINTING_TOLERANCE * max(x1 - x0, y1 - y0)
        box = cell["box"]
        explained += 1
        hits += int(box[0] - slack <= x <= box[2] + slack and box[1] - slack <= y <= box[3] + slack)
    if not explained:
        return None
    return {"explained": explained, "peak_on_head": hits, "share": round(hits / explained, 4)}
