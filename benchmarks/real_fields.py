"""Field mode on real cells: recall, precision, double counts, class agreement and % normal per set and seed.

For each set (HuSHeM, SMIDS) and seed, a panning clip is composed from the set's real labelled
crops (`sperm_edge.data.real_fields`: touching heads, pale and dark stains, SMIDS `Non-Sperm`
debris) and run through the runtime as `sperm-edge run BUNDLE --source clip.mp4 --mode field`
runs it (`Pipeline` + `RunOutputs`, ONNX Runtime CPU FP32). Figures per clip:

- recall, precision, double_count_rate: `runtime.scoring.score_events` against the clip's truth
  (an event on debris called `Non-Sperm` is neither a hit nor a false head, nor is an event on no
  object called `Non-Sperm`: the report counts neither; `rejected_off_cells` counts the latter);
- class_agreement: share of the events on a cell whose class is the class the same bundle gives
  the cell's original crop (the crop it was cut from), in all 8 dihedral views averaged when the
  field run turns its crops (rolling views, the default, or `--tta`): the same orientation-averaged
  classifier on both sides;
- percent_normal (with its 95% Wilson interval, `runtime.report.sample_summary`) against
  percent_normal_truth (the labels of the cells in the clip) and percent_normal_crops (the
  bundle on the original crops of those cells: the figure a perfect localiser would give);
- fps: the stream's frames per second;
- set_aside: cells field mode sets aside, uncounted, as unlike every validation cell of the
  bundle (drift score above `DriftModel.set_aside_threshold`, the highest of its validation
  crops': chosen on the validation seeds 0-2 against the 0.95 and 0.99 quantiles; see
  `sperm_edge.drift`), and how many of them lay on heads (lost) and on debris.

The clips run as `sperm-edge run` runs them (bundle temperature, drift model): row `new, set
aside` as it runs by default, `new, count all` as with `--count-all`, nothing set aside:
a cell is set aside exactly when its event's drift score (the median over its sightings) exceeds
the threshold (tests/runtime/test_drift.py checks it), so both rows come from one run.

Each clip also runs with the localiser of commit BASELINE (the one before issue 11, loaded from
`git show`, reachable only here) for the before/after figures, and a synthetic clip runs with
both, alternating, for the synthetic recall and the FPS ratio measured side by side.

    flock /tmp/sperm-edge-cpu.lock python benchmarks/real_fields.py \\
        --hushem-bundle /work/models/issue11-hushem --smids-bundle /work/models/issue11-smids \\
        --data ../shared/data

writes benchmarks/results/real_fields.json and real_fields.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sperm_edge.bundle import Bundle, load_bundle
from sperm_edge.data.real_fields import write_real_field
from sperm_edge.io import atomic_write_bytes, atomic_write_json
from sperm_edge.localize import LocalizerConfig
from sperm_edge.preprocess import decode_image, preprocess_batch
from sperm_edge.runtime import pipeline as pipeline_module
from sperm_edge.runtime.backends import open_backend
from sperm_edge.runtime.flagging import FlagPolicy
from sperm_edge.runtime.outputs import RunOutputs, stream
from sperm_edge.runtime.pipeline import Pipeline, PipelineConfig
from sperm_edge.runtime.report import sample_summary
from sperm_edge.runtime.scoring import match_box, score_events
from sperm_edge.runtime.sources import open_source

log = logging.getLogger("real_fields")
REPO = Path(__file__).resolve().parents[1]
BASELINE = "a2f9abe"  # main before issue 11: the localiser tuned on synthetic stain
TARGETS = {"recall": 0.97, "precision": 0.97, "double_count_rate": 0.02, "class_agreement": 0.95}


def baseline_localizer(commit: str = BASELINE):
    """The module `sperm_edge/runtime/localize.py` as it was at `commit` (for the before/after comparison only)."""
    name = f"_localize_{commit}"
    if name not in sys.modules:
        source = subprocess.run(["git", "show", f"{commit}:sperm_edge/runtime/localize.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout  # fmt: skip
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
        sys.modules[name] = module  # dataclasses look their module up
        exec(compile(source, f"{commit}:localize.py", "exec"), module.__dict__)  # our own history
    return sys.modules[name]


@contextmanager
def localizer(which: str, framing: dict | None, isolate: bool = True):
    """The pipeline config's localiser: `new` (this tree's, framed by the bundle) or `old` (BASELINE's)."""
    if which == "new":
        yield LocalizerConfig.framed(framing, isolate=isolate)
        return
    old = baseline_localizer()
    saved = pipeline_module.find_cells

    def old_find_cells(rgb, cfg):
        found = old.find_cells(rgb, cfg)
        for det in found:
            det.cut = False  # it cut no pair apart (the tracker reads it)
        return found

    pipeline_module.find_cells = old_find_cells
    cfg = old.LocalizerConfig()
    cfg.isolate = False  # its detections carry no outline; its crops were cut as they are
    try:
        yield cfg
    finally:
        pipeline_module.find_cells = saved


def run_clip(
    bundle: Bundle, clip: Path, which: str, threads: int | None, tta: bool, isolate: bool = True,
    rolling: bool = False,
) -> tuple[list[dict], dict]:  # fmt: skip
    """Events and stats of one field-mode run over `clip`, as `sperm-edge run --mode field` makes them."""
    policy = FlagPolicy.for_classes(bundle.abnormal_classes)
    with (
        tempfile.TemporaryDirectory(prefix="real-fields-run-") as out,
        localizer(which, bundle.framing, isolate) as cfg,
    ):
        config = PipelineConfig(mode="field", localizer=cfg, keep_frames=False, temperature=bundle.temperature,
                                drift=bundle.drift_model(), rolling_views=rolling)  # fmt: skip
        with (
            open_source(str(clip)) as source,
            open_backend(bundle, "ort-cpu", "fp32", threads, tta=tta) as engine,
            RunOutputs(Path(out)) as outputs,
            Pipeline(source, engine, bundle.classes, bundle.preprocess, config, policy) as pipeline,
        ):
            stream(pipeline, outputs)
            stats = pipeline.stats()
        return list(outputs.events), stats


def crop_classes(bundle: Bundle, data: Path, sources: list[str], threads: int | None, tta: bool) -> dict[str, str]:
    """The bundle's class for each original crop (path under `data`), with the clips' test-time augmentation."""
    out = {}
    with open_backend(bundle, "ort-cpu", "fp32", threads, tta=tta) as engine:
        for i in range(0, len(sources), 32):
            chunk = sources[i : i + 32]
            batch = preprocess_batch([decode_image(data / s) for s in chunk], bundle.preprocess)
            labels = engine.infer(batch).logits.argmax(axis=1)
            out.update({s: bundle.classes[int(k)] for s, k in zip(chunk, labels, strict=True)})
    return out


def score_clip(events: list[dict], truth: dict, bundle: Bundle, originals: dict[str, str]) -> dict:
    """The figures of one run (see the module docstring)."""
    score = score_events(events, truth)
    frames = {f["index"]: f["cells"] for f in truth["frames"]}
    agree = on_cell = debris_as_heads = 0
    for event in events:
        cell = match_box(event["box"], frames.get(event["frame"], []))
        if cell is not None and cell.get("debris") and event["class"] != cell["class"]:
            debris_as_heads += 1
        if cell is None or cell.get("debris"):
            continue
        on_cell += 1
        agree += int(event["class"] == originals[truth["cells"][str(cell["id"])]["source"]])
    not_debris = score["events"] - score["debris_rejected"] - score["rejected_off_cells"] - debris_as_heads
    normal = bundle.normal_class
    summary = sample_summary(events, bundle.classes, normal)
    countable = sorted({c["id"] for cells in frames.values() for c in cells if not c["partial"] and not c["debris"]})
    labels = [truth["cells"][str(i)]["class"] for i in countable]
    predicted = [originals[truth["cells"][str(i)]["source"]] for i in countable]
    truth_pct = 100.0 * sum(c == normal for c in labels) / max(1, len(labels))
    ci = summary["ci95"]
    return {
        "cells": score["cells"],
        "counted": score["counted"],
        "events": score["events"],
        "recall": round(score["recall"], 4),
        "precision": round(score["precision"], 4),
        "double_count_rate": round(score["double_count_rate"], 4),
        "false_counts": score["false_counts"],
        "debris_rejected": score["debris_rejected"],
        "rejected_off_cells": score["rejected_off_cells"],
        "debris": sum(1 for c in truth["cells"].values() if c["debris"]),
        "debris_as_heads": debris_as_heads,
        # the localiser's own false heads (tails, fragments, background): debris taken for a head set aside
        "precision_without_debris": round(1 - (score["false_counts"] - debris_as_heads) / max(1, not_debris), 4),
        "class_agreement": round(agree / on_cell, 4) if on_cell else None,
        "percent_normal": summary["percent_normal"],
        "percent_normal_ci95": ci,
        "percent_normal_truth": round(truth_pct, 2),
        "percent_normal_crops": round(100.0 * sum(c == normal for c in predicted) / max(1, len(predicted)), 2),
        "truth_in_ci95": bool(ci and ci[0] <= truth_pct <= ci[1]),
    }


def variants(which: str, events: list[dict], bundle: Bundle) -> list[tuple[str, list[dict], list[dict]]]:
    """(row name, counted events, events set aside): the new localiser with cells set aside and with `--count-all`."""
    model = bundle.drift_model()
    if which != "new" or model is None:
        return [(which, events, [])]
    gate = model.set_aside_threshold
    aside = [e for e in events if e.get("drift_score") is not None and e["drift_score"] > gate]
    kept = [e for e in events if e not in aside]
    return [("new, set aside", kept, aside), ("new, count all", events, [])]


def set_aside_figures(aside: list[dict], truth: dict) -> dict:
    """How many cells were set aside, and how many of them lay on a head (lost) or on debris."""
    frames = {f["index"]: f["cells"] for f in truth["frames"]}
    cells = [match_box(e["box"], frames.get(e["frame"], [])) for e in aside]
    return {"set_aside": len(aside), "set_aside_on_heads": sum(1 for c in cells if c is not None and not c["debris"]),
            "set_aside_on_debris": sum(1 for c in cells if c is not None and c["debris"])}  # fmt: skip


def synthetic_comparison(
    bundle: Bundle, work: Path, frames: int, reps: int, threads: int | None, rolling: bool
) -> list[dict]:
    """The synthetic clip, old and new localiser alternating `reps` times: recall and FPS side by side."""
    from sperm_edge.data.synthetic import write_video

    clip = work / "synthetic.mp4"
    write_video(clip, frames=frames, seed=0, style="hushem")
    truth = json.loads(clip.with_suffix(".json").read_text())
    rows = []
    for rep in range(reps):
        for which in ("old", "new"):
            events, stats = run_clip(bundle, clip, which, threads, tta=False, rolling=rolling)
            events = variants(which, events, bundle)[0][1]  # `new` as run by default: cells set aside
            score = score_events(events, truth)
            rows.append({"localizer": which, "rep": rep, "recall": round(score["recall"], 4),
                         "precision": round(score["precision"], 4), "double_counts": score["double_counts"],
                         "fps": stats["fps"], "localisation_ms": stats["stages_ms"]["localisation"]["mean"],
                         "loadavg": os.getloadavg()[0]})  # fmt: skip
            log.info("synthetic %s rep %d: %s", which, rep, rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--hushem-bundle", type=Path, required=True)
    parser.add_argument("--smids-bundle", type=Path, required=True)
    parser.add_argument(
        "--seeds", default="10,11,12", help="Clip seeds (0-2, validation: tuned the localiser and the set-aside rule)."
    )
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--synthetic-frames", type=int, default=60)
    parser.add_argument("--synthetic-reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-baseline", action="store_true", help="Skip the BASELINE localiser on the real clips.")
    parser.add_argument("--tta", action="store_true", help="Classify every crop in its 8 orientations (`run --tta`).")
    parser.add_argument(
        "--no-rolling-views",
        dest="rolling_views",
        action="store_false",
        help="Field crops as they are, not in the frame's dihedral view (`run --no-rolling-views`); the original "
        "crops are then classified in one view, else with 8-view TTA.",
    )
    parser.add_argument(
        "--no-isolate", dest="isolate", action="store_false", help="Cut crops as they are (`run --no-isolate`)."
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    bundles = {"hushem": load_bundle(args.hushem_bundle), "smids": load_bundle(args.smids_bundle)}
    started = time.time()
    load_before = os.getloadavg()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="real-fields-") as tmp:
        work = Path(tmp)
        synthetic = synthetic_comparison(bundles["hushem"], work, args.synthetic_frames, args.synthetic_reps,
                                         args.threads, args.rolling_views)  # fmt: skip
        for name, bundle in bundles.items():
            for seed in seeds:
                folder = write_real_field(args.data, work / f"{name}-{seed}", args.cells, args.frames, seed, name)
                truth = json.loads((folder / "clip.json").read_text())
                sources = sorted({c["source"] for c in truth["cells"].values() if not c["debris"]})
                originals = crop_classes(bundle, args.data, sources, args.threads, args.tta or args.rolling_views)
                for which in ("new",) if args.no_baseline else ("new", "old"):
                    events, stats = run_clip(bundle, folder / "clip.mp4", which, args.threads, args.tta, args.isolate,
                                             args.rolling_views)  # fmt: skip
                    for variant, counted, aside in variants(which, events, bundle):
                        stages = {k: v["mean"] for k, v in stats["stages_ms"].items()}
                        row = {"set": name, "seed": seed, "localizer": variant,
                               **score_clip(counted, truth, bundle, originals), **set_aside_figures(aside, truth),
                               "fps": stats["fps"], "stages_ms_mean": stages,
                               "loadavg": os.getloadavg()[0]}  # fmt: skip
                        rows.append(row)
                        brief = {k: row[k] for k in (*TARGETS, "fps", "set_aside")}
                        log.info("%s seed %d %s: %s", name, seed, variant, brief)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "baseline_commit": BASELINE,
        "bundles": {k: str(v.path) for k, v in bundles.items()},
        "crop_scale": {k: (v.framing or {}).get("crop_scale") for k, v in bundles.items()},
        "set_aside_threshold": {
            k: round(m.set_aside_threshold, 4) if (m := v.drift_model()) else None for k, v in bundles.items()
        },  # fmt: skip
        "settings": {
            "cells": args.cells,
            "frames": args.frames,
            "seeds": seeds,
            "backend": "ort-cpu fp32",
            "tta": args.tta,
            "rolling_views": args.rolling_views,
            "isolate": args.isolate,
        },  # fmt: skip
        "targets": TARGETS,
        "rows": rows,
        "totals": totals(rows),
        "synthetic": synthetic,
        "synthetic_summary": synthetic_summary(synthetic),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "real_fields.json", result)
    atomic_write_bytes(args.out / "real_fields.md", render(result).encode())
    print(render(result))
    return 0


def totals(rows: list[dict]) -> list[dict]:
    """Per set and localiser: the clips pooled (cells and events summed over seeds)."""
    out = []
    for key in sorted({(r["set"], r["localizer"]) for r in rows}):
        group = [r for r in rows if (r["set"], r["localizer"]) == key]
        cells, counted = sum(r["cells"] for r in group), sum(r["counted"] for r in group)
        out.append({
            "set": key[0], "localizer": key[1], "clips": len(group), "cells": cells,
            "recall": round(counted / max(1, cells), 4),
            "precision": round(float(np.mean([r["precision"] for r in group])), 4),
            "precision_without_debris": round(float(np.mean([r["precision_without_debris"] for r in group])), 4),
            "double_count_rate": round(float(np.mean([r["double_count_rate"] for r in group])), 4),
            "class_agreement": round(float(np.mean([r["class_agreement"] or 0 for r in group])), 4),
            "debris": sum(r["debris"] for r in group),
            "rejected_off_cells": sum(r.get("rejected_off_cells", 0) for r in group),
            "set_aside": sum(r["set_aside"] for r in group),
            "set_aside_on_heads": sum(r["set_aside_on_heads"] for r in group),
            "set_aside_on_debris": sum(r["set_aside_on_debris"] for r in group),
            "truth_in_ci95": sum(r["truth_in_ci95"] for r in group),
            "fps": round(float(np.mean([r["fps"] for r in group])), 2),
        })  # fmt: skip
    return out


def synthetic_summary(rows: list[dict]) -> dict:
    fps = {w: float(np.median([r["fps"] for r in rows if r["localizer"] == w])) for w in ("old", "new")}
    recall = {w: float(np.mean([r["recall"] for r in rows if r["localizer"] == w])) for w in ("old", "new")}
    return {"fps_old": round(fps["old"], 2), "fps_new": round(fps["new"], 2),
            "fps_ratio": round(fps["new"] / fps["old"], 3) if fps["old"] else None,
            "recall_old": round(recall["old"], 4), "recall_new": round(recall["new"], 4)}  # fmt: skip


def render(result: dict) -> str:
    lines = [
        "# Field mode on real cells (issue 11)",
        "",
        f"Command: `{result['command']}`  ",
        f"Made {result['created']} in {result['elapsed_s']} s; load average before {result['loadavg_before']}, "
        f"after {result['loadavg_after']}. Backend {result['settings']['backend']}"
        f"{' with 8-view TTA (field and original crops alike)' if result['settings'].get('tta') else ''}"
        f"{', rolling views (original crops with 8-view TTA)' if result['settings'].get('rolling_views') else ''}"
        f"{'' if result['settings'].get('isolate', True) else ', neighbours left in the crops (--no-isolate)'}; "
        f"{result['settings']['cells']} cells + debris per clip, {result['settings']['frames']} frames.",
        "",
        "Targets: recall and precision >= 0.97, double counts <= 2%, class agreement >= 95%, "
        "% normal's 95% interval holding the truth. `old`: the localiser of "
        f"{result['baseline_commit']} (before this issue), `new, set aside`: this one as `sperm-edge run` runs it "
        "by default (cells unlike every validation cell set aside, uncounted, for review), `new, count all`: the same "
        f"run with `--count-all`. Crop scales (the bundles' framing): {result['crop_scale']}; set-aside drift "
        f"thresholds (the highest validation crop's score, chosen on seeds 0-2): {result['set_aside_threshold']}.",
        "",
        "| set | seed | localiser | cells | recall | precision | precision w/o debris | double counts | "
        "class agreement | % normal [95% CI] | truth | on orig. crops | debris (rejected, as heads) "
        "| set aside (on heads, on debris) | fps |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | ---: |",
    ]
    for r in result["rows"]:
        ci = r["percent_normal_ci95"] or ["-", "-"]
        lines.append(
            f"| {r['set']} | {r['seed']} | {r['localizer']} | {r['cells']} | {r['recall']:.3f} | {r['precision']:.3f} "
            f"| {r['precision_without_debris']:.3f} | {100 * r['double_count_rate']:.1f}% "
            f"| {100 * (r['class_agreement'] or 0):.1f}% | {r['percent_normal']} [{ci[0]}, {ci[1]}] "
            f"| {r['percent_normal_truth']} | {r['percent_normal_crops']} "
            f"| {r['debris']} ({r['debris_rejected']}, {r['debris_as_heads']}) "
            f"| {r['set_aside']} ({r['set_aside_on_heads']}, {r['set_aside_on_debris']}) | {r['fps']:.1f} |"
        )
    lines += [
        "",
        "Pooled over seeds:",
        "",
        "| set | localiser | cells | recall | precision | precision w/o debris | double counts | class agreement "
        "| truth in CI | set aside (on heads, on debris) | fps |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for t in result["totals"]:
        lines.append(f"| {t['set']} | {t['localizer']} | {t['cells']} | {t['recall']:.3f} | {t['precision']:.3f} | "
            f"{t['precision_without_debris']:.3f} | "
                     f"{100 * t['double_count_rate']:.1f}% | {100 * t['class_agreement']:.1f}% | "
                     f"{t['truth_in_ci95']}/{t['clips']} | {t['set_aside']} ({t['set_aside_on_heads']}, "
                     f"{t['set_aside_on_debris']}) | {t['fps']:.1f} |")  # fmt: skip
    s = result["synthetic_summary"]
    lines += [
        "",
        "Synthetic clip (HuSHeM style, alternating runs; `new` with cells set aside): recall old "
        f"{s['recall_old']:.3f}, new "
        f"{s['recall_new']:.3f}; FPS old {s['fps_old']}, new {s['fps_new']} (ratio {s['fps_ratio']}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
