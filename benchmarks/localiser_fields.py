"""The localiser alone (`localize.find_cells`), on real smear fields and on composed real-crop validation clips.

Two kinds of field, one table per settings (`--config NAME=JSON`: `LocalizerConfig` fields; `default` is the
shipped localiser, `before-47` the one before real smear fields: boxes on the dark core only, no speck rule,
heads of at most 4,000 px):

- real smear fields (`data.smears`, every 16th field, 32 of them): heads clear of the edge with a find at box
  IoU >= 0.3 (`found`) and >= 0.5 (`iou50`), median best IoU, finds per head;
- composed real-crop clips (`data.real_fields`, validation seeds 0-2, 6 frames each; looks plain, zoom-in, dense,
  defocus; the benchmarks' seeds and the held-out look untouched): whole heads with a find on them as the run's
  scoring matches (`data.truth.match_box`: the find's box centre on the head), and finds on no head or on debris.

    python benchmarks/localiser_fields.py --data ../shared/data

writes benchmarks/results/localiser_fields.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sperm_edge.bench.record import BenchmarkRecord
from sperm_edge.data.real_fields import RealFieldVideo
from sperm_edge.data.smears import load_smears
from sperm_edge.data.truth import box_iou, match_box
from sperm_edge.localize import LocalizerConfig, find_cells
from sperm_edge.preprocess import decode_image

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"default": {}, "before-47": {"grow_level": 1.0, "speck_width": 0.0, "speck_density": 0.0, "max_area": 4000}}
LOOKS = ("plain", "zoom-in", "dense", "defocus")
SEEDS, FRAMES = (0, 1, 2), 6


def smear_row(data: Path, cfg: LocalizerConfig) -> dict:
    ious, finds, seconds = [], 0, 0.0
    for field in load_smears(data / "smears")[::16]:
        rgb = decode_image(field.path)
        start = time.perf_counter()
        found = find_cells(rgb, cfg)
        seconds += time.perf_counter() - start
        finds += len(found)
        heads = [c for c in field.cells if not c["partial"]]
        ious += [max((box_iou(d.head_box, c["box"]) for d in found), default=0.0) for c in heads]
    best = np.array(ious)
    return {"kind": "smears", "heads": len(best), "found": round(float((best >= 0.3).mean()), 4),
            "iou50": round(float((best >= 0.5).mean()), 4), "median_iou": round(float(np.median(best)), 3),
            "finds_per_head": round(finds / len(best), 2), "ms_per_field": round(1000 * seconds / 32, 1)}  # fmt: skip


def composed_row(data: Path, style: str, look: str, cfg: LocalizerConfig) -> dict:
    heads = found = false = 0
    for seed in SEEDS:
        video = RealFieldVideo(data, frames=60, seed=seed, style=style, look=look)
        for index in np.linspace(0, 59, FRAMES).astype(int):
            rgb, truth = video.frame(int(index)), video.truth(int(index))
            whole = {c["id"] for c in truth["cells"] if not c["partial"] and not c["debris"]}
            hit = set()
            for det in find_cells(rgb, cfg):
                cell = match_box(det.head_box, truth["cells"])
                if cell is None or cell["debris"]:
                    false += 1
                elif cell["id"] in whole:
                    hit.add(cell["id"])
            heads, found = heads + len(whole), found + len(hit)
    return {"kind": f"{style} {look}", "heads": heads, "found": round(found / heads, 4), "false_finds": false}


def render(result: dict) -> str:
    where = f"Commit {result['commit']}, {result['machine']}, load {result['load_before']}; `{result['command']}`."
    lines = ["# The localiser alone on real smear fields and composed real-crop clips", "", where, ""]
    for name, rows in result["configs"].items():
        lines += [f"## {name}: `{json.dumps(CONFIGS.get(name, {}))}`", "",
                  "| fields | heads | found | IoU >= 0.5 | median IoU | finds a head | false finds | ms a field |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in rows:
            lines.append(f"| {r['kind']} | {r['heads']} | {r['found']} | {r.get('iou50', '-')} | "
                         f"{r.get('median_iou', '-')} | {r.get('finds_per_head', '-')} | {r.get('false_finds', '-')} | "
                         f"{r.get('ms_per_field', '-')} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Folder of hushem/, smids/ and smears/.")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--styles", nargs="+", default=["hushem", "smids"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    record = BenchmarkRecord.start(None if argv is None else [__file__, *argv])
    configs = {}
    for name in args.configs:
        cfg = LocalizerConfig(**CONFIGS[name])
        rows = [smear_row(args.data, cfg)]
        rows += [composed_row(args.data, style, look, cfg) for style in args.styles for look in LOOKS]
        configs[name] = rows
    result = record.write(args.out / "localiser_fields.json", [], settings={"configs": CONFIGS}, markdown=render,
                          configs=configs)  # fmt: skip
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
