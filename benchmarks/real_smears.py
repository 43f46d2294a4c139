"""Field mode on real stained smear fields (`../shared/data/smears`), with the bundles the README's commands make.

The standard flow, per fold of the fields (`data.smears.field_folds`: 4 folds of 128 fields), cached under CACHE
so that a cut benchmark resumes (each step runs only when its output is missing):

    sperm-edge train --data DATA/SET --arch cbam_efficientnet_lite0 --out CACHE/runs/SET
    sperm-edge train-verifier --data DATA --out CACHE/runs/verifier-fold-K --field-fold K
    sperm-edge export CACHE/runs/SET --out CACHE/bundles/SET-fold-K --int8 --verifier CACHE/runs/verifier-fold-K

The classifier never sees a field; the verifier learns the fields of the other folds only (the README's own
`train-verifier` learns all of them), so every field is scored by a bundle that never saw it. Each fold's fields
then run as `sperm-edge run BUNDLE --source FIELDS --headless` runs them (`SessionOptions` defaults; still images,
so no tracking), and each field is a row:

- heads (clear of the field's edge), counted (heads with a counted event on them, a SMIDS head called `Non-Sperm`
  being a missed head), found (heads with any find on them, counted or set aside), set_aside (by reason, on heads
  and not), false_counts (counted events on no head), double_counts (a second counted event on one head),
  iou50 (counted heads whose box overlaps the true head box at IoU >= 0.5), non_sperm (heads called Non-Sperm);
- fps (the session's frames per second, with the load average), the report's drift verdict and trust verdict.

Per fold, a camera pan over its first 8 fields too (`sperm-edge data real-pan`: a 960x768 window sliding across
each field and back, 40 frames a field; `sperm-edge run BUNDLE --source clip.mp4 --truth clip.json`, tracking on):
recall, precision, double counts and FPS from the report's `truth`.

    python benchmarks/real_smears.py --data ../shared/data

writes benchmarks/results/real_smears.json and real_smears.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from sperm_edge.bench.record import BenchmarkRecord
from sperm_edge.bundle import load_bundle
from sperm_edge.data.presets import NON_SPERM
from sperm_edge.data.smear_pan import write_real_pan
from sperm_edge.data.smears import FOLDS, SmearField, fields_of_fold, load_smears
from sperm_edge.data.truth import box_iou, match_box
from sperm_edge.io import atomic_write_json, cache_dir
from sperm_edge.runtime.session import SessionOptions, open_session

log = logging.getLogger("real_smears")
REPO = Path(__file__).resolve().parents[1]
SETS = ("hushem", "smids")
TARGETS = {"recall": 0.95, "precision": 0.97, "iou50": 0.95, "fps": 12.0}


def sperm_edge(*args: str) -> None:
    """One README command, as a user types it (`python -m sperm_edge` of this interpreter)."""
    log.info("running: sperm-edge %s", " ".join(args))
    subprocess.run([sys.executable, "-m", "sperm_edge", *args], check=True, cwd=REPO)


def fold_bundle(data: Path, cache: Path, name: str, fold: int) -> Path:
    """The standard-flow bundle of `name` whose verifier never saw fold `fold` of the fields (cached)."""
    run, verifier, bundle = cache / "runs" / name, cache / "runs" / f"verifier-fold-{fold}", cache / "bundles"
    bundle = bundle / f"{name}-fold-{fold}"
    if (bundle / "manifest.json").is_file():
        return bundle
    if not (verifier / "model" / "best.json").is_file():
        sperm_edge("train-verifier", "--data", str(data), "--out", str(verifier), "--field-fold", str(fold))
    if not (run / "metrics.json").is_file():
        resume = ["--resume"] if (run / "last.json").is_file() else []
        sperm_edge("train", "--data", str(data / name), "--arch", "cbam_efficientnet_lite0", "--out", str(run), *resume)
    sperm_edge("export", str(run), "--out", str(bundle), "--int8", "--verifier", str(verifier))
    return bundle


def score_field(field: SmearField, events: list[dict], aside: list[dict]) -> dict:
    """A field's figures from the counted events and set-aside records that name it."""
    heads = [c for c in field.cells if not c["partial"]]
    counted: Counter = Counter()
    false_counts = non_sperm = iou50 = 0
    for event in events:
        cell = match_box(event["box"], field.cells)
        if cell is None:
            false_counts += 1
        elif not cell["partial"]:
            if NON_SPERM.fullmatch(event["class"]):
                non_sperm += 1
                continue
            counted[cell["id"]] += 1
            iou50 += counted[cell["id"]] == 1 and box_iou(event["box"], cell["box"]) >= 0.5
    on_head = {cell["id"] for r in aside if (cell := match_box(r["box"], field.cells)) and not cell["partial"]}
    found = {c["id"] for c in heads} & (set(counted) | on_head)
    reasons = Counter(f"{r['reason']}:{'head' if match_box(r['box'], field.cells) else 'other'}" for r in aside)
    return {
        "field": field.name, "heads": len(heads), "counted": len(counted), "found": len(found),
        "false_counts": false_counts, "double_counts": sum(n - 1 for n in counted.values()),
        "iou50": iou50, "non_sperm": non_sperm, "set_aside": dict(sorted(reasons.items())),
    }  # fmt: skip


def run_fold(bundle_path: Path, fields: list[SmearField], threads: int | None) -> tuple[list[dict], dict]:
    """Rows of `fields` through the bundle, as `sperm-edge run BUNDLE --source DIR --headless` runs a folder."""
    bundle = load_bundle(bundle_path)
    with tempfile.TemporaryDirectory(prefix="real-smears-") as work:
        source = Path(work) / "fields"
        source.mkdir()
        for field in fields:
            (source / field.name).symlink_to(field.path.resolve())
        with open_session(bundle, str(source), Path(work) / "out", SessionOptions(threads=threads)) as session:
            session.run()
        report, events, aside = session.report, list(session.outputs.events), list(session.outputs.set_aside)
    by_name: dict[str, tuple[list, list]] = {f.name: ([], []) for f in fields}
    for event in events:
        by_name[event["name"]][0].append(event)
    for record in aside:
        by_name[record["name"]][1].append(record)
    rows = [score_field(f, *by_name[f.name]) for f in fields]
    load = round(os.getloadavg()[0], 2)
    facts = {"fps": report["fps"], "loadavg": load, "drift_warning": bool((report.get("drift") or {}).get("warning")),
             "trust": report.get("trust"), "percent_normal": report.get("percent_normal"),
             "backend": f"{report['backend']['backend']} {report['backend']['precision']}"}  # fmt: skip
    return rows, facts


def run_pan(bundle_path: Path, clip: Path, threads: int | None) -> dict:
    """The pan's figures through the bundle, as `sperm-edge run BUNDLE --source clip.mp4 --truth clip.json`."""
    truth = json.loads((clip / "clip.json").read_text())
    with tempfile.TemporaryDirectory(prefix="real-smears-pan-") as work:
        options = SessionOptions(threads=threads, truth=truth, keep_frames=False)
        with open_session(load_bundle(bundle_path), str(clip / "clip.mp4"), work, options) as session:
            session.run()
        report = session.report
    score = report["truth"]
    return {"frames": len(truth["frames"]), "heads": score["cells"], "counted": score["counted"],
            "recall": round(score["recall"], 4), "precision": round(score["precision"], 4),
            "double_counts": score["double_counts"], "false_counts": score["false_counts"], "fps": report["fps"],
            "loadavg": round(os.getloadavg()[0], 2), "trust": (report.get("trust") or {}).get("warning")}  # fmt: skip


def summarize(rows: list[dict]) -> list[dict]:
    """Per bundle, totals over every fold's fields."""
    out = []
    for name in sorted({r["bundle"] for r in rows}):
        mine = [r for r in rows if r["bundle"] == name]
        total = {k: sum(r[k] for r in mine) for k in ("heads", "counted", "found", "false_counts", "double_counts",
                                                          "iou50", "non_sperm")}  # fmt: skip
        counted_events = total["counted"] + total["double_counts"] + total["false_counts"]
        total |= {
            "bundle": name, "fields": len(mine),
            "recall": round(total["counted"] / max(total["heads"], 1), 4),
            "found_rate": round(total["found"] / max(total["heads"], 1), 4),
            "precision": round((total["counted"] + total["double_counts"]) / max(counted_events, 1), 4),
            "iou50_rate": round(total["iou50"] / max(total["counted"], 1), 4),
            "fps": round(sum(r["fps"] for r in mine) / len(mine), 2),
        }  # fmt: skip
        out.append(total)
    return out


def render(result: dict) -> str:
    lines = [
        "# Field mode on real smear fields (standard-flow bundles, every field scored by a verifier that never saw it)",
        "",
        f"Measured at commit {result['commit']} on {result['machine']}; command: `{result['command']}`.",
        f"Targets: recall >= {TARGETS['recall']}, precision >= {TARGETS['precision']}, counted heads with box IoU "
        f">= 0.5: >= {TARGETS['iou50']}, >= {TARGETS['fps']} FPS on 1280x1024 stills (2 cores).",
        "",
        "| bundle | fields | heads | found | counted (recall) | precision | false counts | double counts | "
        "called Non-Sperm | IoU >= 0.5 | FPS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in result["summary"]:
        lines.append(f"| {s['bundle']} | {s['fields']} | {s['heads']} | {s['found_rate']:.3f} | {s['counted']} "
                     f"({s['recall']:.3f}) | {s['precision']:.3f} | {s['false_counts']} | {s['double_counts']} | "
                     f"{s['non_sperm']} | {s['iou50_rate']:.3f} | {s['fps']:.1f} |")  # fmt: skip
    lines += ["", "Per fold (the run over the fold's fields): drift and trust verdicts, % normal reported.", "",
              "| bundle | fold | FPS | load | drift warning | trust warning | % normal | backend |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for f in result["folds"]:
        trust = (f.get("trust") or {}).get("warning")
        lines.append(f"| {f['bundle']} | {f['fold']} | {f['fps']} | {f['loadavg']} | {f['drift_warning']} | "
                     f"{bool(trust)} | {f['percent_normal']} | {f['backend']} |")  # fmt: skip
    pans = [f for f in result["folds"] if f.get("pan")]
    if pans:
        lines += ["", "A camera pan over 8 fields of each fold (960x768 window, 40 frames a field, tracking on):", "",
                  "| bundle | fold | frames | heads | counted (recall) | precision | double counts | FPS | load |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for f in pans:
            pan = f["pan"]
            lines.append(f"| {f['bundle']} | {f['fold']} | {pan['frames']} | {pan['heads']} | {pan['counted']} "
                         f"({pan['recall']:.3f}) | {pan['precision']:.3f} | {pan['double_counts']} | {pan['fps']} | "
                         f"{pan['loadavg']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Folder of hushem/, smids/ and smears/.")
    parser.add_argument("--cache", type=Path, default=None, help="Bundles and rows (default: the user cache).")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(1, FOLDS + 1)))
    parser.add_argument("--max-fields", type=int, default=None, help="The first N fields of each fold (a quick look).")
    parser.add_argument("--pan-fields", type=int, default=8, help="Fields of each fold's pan (0: no pan).")
    parser.add_argument("--pan-frames", type=int, default=40, help="Frames a field in the pan.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    record = BenchmarkRecord.start(None if argv is None else [__file__, *argv])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cache = args.cache or cache_dir("real-smears")
    fields = load_smears(args.data / "smears")
    for fold in args.folds:
        for name in args.sets:
            done = cache / "rows" / f"{name}-fold-{fold}.json"
            if done.is_file():
                continue
            bundle = fold_bundle(args.data, cache, name, fold)
            held_out = list(fields_of_fold(fields, fold))[: args.max_fields]
            rows, facts = run_fold(bundle, held_out, args.threads)
            if args.pan_fields:
                clip = cache / "pans" / f"fold-{fold}"
                if not (clip / "clip.json").is_file():
                    write_real_pan(held_out[: args.pan_fields], clip, args.pan_frames, force=True)
                facts["pan"] = run_pan(bundle, clip, args.threads)
            rows = [{"bundle": name, "fold": fold, **r, "fps": facts["fps"]} for r in rows]
            atomic_write_json(done, {"rows": rows, "fold": {"bundle": name, "fold": fold, **facts}})
            log.info("%s fold %d: %s", name, fold, summarize(rows)[0])
    parts = [json.loads(p.read_text()) for p in sorted((cache / "rows").glob("*-fold-*.json"))]
    rows = [r for p in parts for r in p["rows"]]
    result = record.write(args.out / "real_smears.json", rows, settings={"targets": TARGETS}, markdown=render,
                          summary=summarize(rows), folds=[p["fold"] for p in parts])  # fmt: skip
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
