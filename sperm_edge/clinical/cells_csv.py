"""`cells.csv`: one row per counted cell of a run, for a spreadsheet or a laboratory system's import."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sperm_edge.clinical.record import ClinicalRecord
from sperm_edge.clinical.who import category
from sperm_edge.io import atomic_write_bytes
from sperm_edge.runtime.events import EVENTS_FILE, read_events

COLUMNS = ("id", "class", "who_category", "confidence", "flagged", "flag_reasons", "time", "first_frame",
           "last_frame", "frames_seen", "track", "box_x0", "box_y0", "box_x1", "box_y1", "crop")  # fmt: skip


def write_cells_csv(record: ClinicalRecord, path: str | Path) -> Path:
    """Write the run's counted cells (events.jsonl, without its header) with a probability column per class."""
    classes = record.report.get("counts", {}).keys() or record.header.get("classes", [])
    normal = record.report.get("normal_class")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*COLUMNS, *(f"p_{c}" for c in classes)])
    for event in read_events(record.run_dir / EVENTS_FILE):
        box = list(event.get("box") or [None] * 4)[:4]
        row = {**event, "who_category": category(event.get("class", ""), normal),
               "flag_reasons": ";".join(event.get("flag_reasons") or []), "flagged": int(bool(event.get("flagged"))),
               **dict(zip(("box_x0", "box_y0", "box_x1", "box_y1"), box, strict=False))}  # fmt: skip
        probs = event.get("probs") or {}
        writer.writerow([*(row.get(c, "") for c in COLUMNS), *(probs.get(c, "") for c in classes)])
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path
