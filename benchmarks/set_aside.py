"""The set-aside threshold of field mode, chosen on validation clips: heads lost against debris removed.

Field mode sets a cell aside (uncounted, flagged for review) when its drift score, the median over
its sightings, exceeds `DriftModel.set_aside_threshold`: a quantile of the bundle's validation
crops' scores. This script measures candidate quantiles on real-crop clips of the VALIDATION seeds
(0-2; `benchmarks/real_fields.py` reports on 10-12): every `--step`-th frame of each clip, the
localiser's cells (framed by the bundle) are scored by the bundle's drift model and matched to the
ground truth; per cell (truth id) the median of its sightings' scores is compared with each
threshold. Per set and quantile: heads set aside (lost), debris objects and their sightings set
aside, false heads (on no object) set aside.

    python benchmarks/set_aside.py \\
        --hushem-bundle HUSHEM_BUNDLE --smids-bundle SMIDS_BUNDLE

writes benchmarks/results/set_aside.json and set_aside.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from sperm_edge.bundle import Bundle, load_bundle
from sperm_edge.data.real_fields import RealFieldVideo
from sperm_edge.engines import open_backend
from sperm_edge.io import atomic_write_bytes, atomic_write_json
from sperm_edge.localize import LocalizerConfig, crop, find_cells
from sperm_edge.preprocess import preprocess_batch
from sperm_edge.runtime.scoring import match_box

log = logging.getLogger("set_aside")
REPO = Path(__file__).resolve().parents[1]


def sightings(bundle: Bundle, data: Path, style: str, seeds: list[int], step: int, cells: int, frames: int) -> list:
    """(kind, cell key, drift score) of each cell the localiser finds on every `step`-th frame of the clips."""
    model = bundle.drift_model()
    cfg = LocalizerConfig.framed(bundle.card.framing)
    out = []
    with open_backend(bundle, "ort-cpu", "fp32") as engine:
        for seed in seeds:
            video = RealFieldVideo(data, cells=cells, frames=frames, seed=seed, style=style)
            for index in range(0, frames, step):
                image, truth = video.frame(index), video.truth(index)
                found = find_cells(image, cfg)
                if not found:
                    continue
                features = engine.infer(
                    preprocess_batch([crop(image, d.crop_box) for d in found], bundle.card.preprocess)
                )
                for det, score in zip(found, model.score(features.features), strict=True):
                    cell = match_box(det.head_box, truth["cells"])
                    if cell is None:
                        out.append(("none", (seed, index, det.center), float(score)))
                    elif not cell["partial"] or cell["debris"]:
                        out.append(("debris" if cell["debris"] else "head", (seed, cell["id"]), float(score)))
    return out


def tally(found: list, threshold: float) -> dict:
    """Cells (by truth id) whose median score exceeds `threshold`, per kind; sightings for debris and false heads."""
    per_cell: dict[tuple, list[float]] = defaultdict(list)
    for kind, key, score in found:
        per_cell[(kind, key)].append(score)
    medians = {k: float(np.median(v)) for k, v in per_cell.items()}

    def count(kind: str) -> tuple[int, int]:
        keys = [k for k in medians if k[0] == kind]
        return sum(medians[k] > threshold for k in keys), len(keys)

    heads, debris, false = count("head"), count("debris"), count("none")
    sights = [s for kind, _, s in found if kind == "debris"]
    return {
        "threshold": round(threshold, 4),
        "heads_set_aside": heads[0],
        "heads": heads[1],
        "debris_set_aside": debris[0],
        "debris": debris[1],
        "debris_sightings_set_aside": int(sum(s > threshold for s in sights)),
        "debris_sightings": len(sights),
        "false_heads_set_aside": false[0],
        "false_heads": false[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--hushem-bundle", type=Path, required=True)
    parser.add_argument("--smids-bundle", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2", help="Validation clip seeds (never the report's 10-12).")
    parser.add_argument("--quantiles", default="0.95,0.99,1.0")
    parser.add_argument("--step", type=int, default=3)
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    quantiles = [float(q) for q in args.quantiles.split(",")]
    started = time.time()
    rows = []
    for style, path in (("hushem", args.hushem_bundle), ("smids", args.smids_bundle)):
        bundle = load_bundle(path)
        found = sightings(bundle, args.data, style, seeds, args.step, args.cells, args.frames)
        scores = bundle.drift_model().val_scores
        for q in quantiles:
            rows.append({"set": style, "quantile": q, **tally(found, float(np.quantile(scores, q)))})
            log.info("%s", rows[-1])
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "settings": {"seeds": seeds, "step": args.step, "cells": args.cells, "frames": args.frames},
        "bundles": {"hushem": str(args.hushem_bundle), "smids": str(args.smids_bundle)},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "set_aside.json", result)
    atomic_write_bytes(args.out / "set_aside.md", render(result).encode())
    print(render(result))
    return 0


def render(result: dict) -> str:
    lines = [
        "# Field mode's set-aside threshold, on validation clips",
        "",
        f"Command: `{result['command']}`  ",
        f"Made {result['created']} in {result['elapsed_s']} s; seeds {result['settings']['seeds']}, one frame in "
        f"{result['settings']['step']}. A cell is set aside when the median of its sightings' drift scores "
        "exceeds the quantile of the bundle's validation crops' scores.",
        "",
        "| set | quantile | threshold | heads set aside | debris set aside | debris sightings set aside "
        "| false heads set aside |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['set']} | {r['quantile']:g} | {r['threshold']} | {r['heads_set_aside']} / {r['heads']} "
            f"| {r['debris_set_aside']} / {r['debris']} | {r['debris_sightings_set_aside']} / {r['debris_sightings']} "
            f"| {r['false_heads_set_aside']} / {r['false_heads']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
