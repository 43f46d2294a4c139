"""Real stained smear fields with every head boxed (`../shared/data/smears`: `images/*.jpg` and `heads.csv`).

What a microscope camera shows: whole fields of real smears, with real tails, midpieces, specks and debris.
A field's truth has the layout of the composed clips' (`data.truth`): a cell per head, `box` (x0, y0, x1, y1,
field pixels, the pale acrosome included), `partial` when the head touches the field's edge (neither a find nor
a miss there is scored), `debris` always false (specks carry no box: a find on one is a false find).

Anything that learns from these fields is scored by k-fold over fields (`field_folds`): never on a field it saw.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sperm_edge.errors import SpermEdgeError

HEADS_FILE, IMAGES_DIR = "heads.csv", "images"
FOLDS, FOLD_SEED = 4, 0  # 4 folds of 128 fields: the size of the held-apart test


@dataclass(frozen=True)
class SmearField:
    """One field: its image file and its heads' truth cells."""

    name: str
    path: Path
    cells: tuple[dict, ...]

    @property
    def heads(self) -> int:
        """Heads clear of the field's edge (the ones a still field is scored on)."""
        return sum(not c["partial"] for c in self.cells)

    def truth(self) -> dict:
        """The field as one frame of a clip's truth (`data.truth`, `runtime.scoring`)."""
        return {"cells": [dict(c) for c in self.cells]}


def is_smear_folder(root: str | Path) -> bool:
    root = Path(root)
    return (root / HEADS_FILE).is_file() and (root / IMAGES_DIR).is_dir()


def load_smears(root: str | Path) -> list[SmearField]:
    """The fields under `root` (`heads.csv` + `images/`), sorted by name; fields without a head are kept."""
    root = Path(root)
    if not is_smear_folder(root):
        raise SpermEdgeError(f"{root} is not a smear-field folder: it needs {HEADS_FILE} and {IMAGES_DIR}/")
    cells: dict[str, list[dict]] = defaultdict(list)
    try:
        with open(root / HEADS_FILE, newline="") as handle:
            for row in csv.DictReader(handle):
                box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
                partial = row.get("touches_border", "0") == "1"
                cells[row["image"]].append(
                    {"id": int(row["instance"]), "box": box, "partial": partial, "debris": False}
                )
    except (KeyError, ValueError) as err:
        raise SpermEdgeError(
            f"{root / HEADS_FILE}: not a heads table (image, instance, x1, y1, x2, y2, ...): {err}"
        ) from err
    images = sorted(p for p in (root / IMAGES_DIR).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    return [SmearField(p.name, p, tuple(cells.get(p.name, ()))) for p in images]


def field_folds(fields: list[SmearField], folds: int = FOLDS, seed: int = FOLD_SEED) -> dict[str, int]:
    """Fold (1..folds) of each field: a seeded shuffle of the names dealt round, so folds differ by one at most."""
    if folds < 2:
        raise SpermEdgeError(f"field folds must be 2 or more, got {folds}")
    names = sorted(f.name for f in fields)
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[i]: 1 + k % folds for k, i in enumerate(order)}


def fields_of_fold(
    fields: list[SmearField], fold: int | None, folds: int = FOLDS, held_out: bool = True
) -> Iterator[SmearField]:
    """The fields of `fold` (`held_out`) or of every other fold; every field when `fold` is None."""
    assignment = field_folds(fields, folds) if fold is not None else {}
    for field in fields:
        if fold is None or (assignment[field.name] == fold) == held_out:
            yield field
