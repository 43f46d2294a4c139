"""The sample report: cells per class, % normal forms with a 95% Wilson interval, performance, flagged cells.

WHO's laboratory manual (6th ed., 2021) asks for at least 200 assessed sperm per sample; the report
warns below that. The interval is Wilson's score interval (Wilson 1927), which stays inside
[0, 100] and keeps its coverage for small counts and proportions near 0 or 1, unlike the normal
approximation. Classes that are not sperm (e.g. SMIDS' "Non-Sperm") are listed but left out of
the percentage. `drift` (when the bundle has a drift model) says whether the cells look like the
training data (`runtime.drift`). `trust` says when the % normal cannot be used as it is, whatever the drift
test says: when fewer than `MIN_COUNTED_SHARE` of the objects the finder found were counted as sperm (the rest
set aside as not heads or unlike training, or called debris), the count describes a minority of the cells.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from sperm_edge.data.presets import NON_SPERM
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_bytes, atomic_write_json
from sperm_edge.runtime.drift import drift_message, run_drift
from sperm_edge.runtime.events import EVENTS_FILE, SET_ASIDE_FILE, read_events, read_run_header

log = logging.getLogger(__name__)

WHO_MINIMUM = 200
MAX_THUMBNAILS = 60
# When a % normal stands as it is (`count_trust`): on real smear fields a bundle that counted a third of the heads
# its finder found (the rest set aside as not heads, or called Non-Sperm) reported 19% and 87% normal forms on like
# fields, one of them without a drift warning. Composed real-crop clips of the training labs' own cells set aside
# up to 60% of their objects as not heads (SMIDS's slides carry as much debris as sperm), which is no fault.
MIN_COUNTED_SHARE = 0.5  # of the objects the verifier passed (sperm, Non-Sperm, unlike training) counted as sperm
MAX_NOT_HEAD_SHARE = 2 / 3  # of every object found, set aside as not a head


def count_trust(summary: dict, set_aside: dict | None) -> dict:
    """Whether a run's % normal stands as it is, whatever the drift test says: a warning, with what to do, when
    fewer than `MIN_COUNTED_SHARE` of the cells taken for heads were counted as sperm (the rest called debris or
    unlike training) or when more than `MAX_NOT_HEAD_SHARE` of the objects found were set aside as not heads."""
    set_aside = set_aside or {}
    sperm, cells = summary["sperm_counted"], summary["cells"]
    heads = cells + int(set_aside.get("unlike_training", 0))
    not_heads = int(set_aside.get("not_a_head", 0))
    found = heads + not_heads
    verdict: dict = {
        "found": found, "taken_for_heads": heads, "sperm_counted": sperm, "not_a_head": not_heads,
        "counted_share": round(sperm / heads, 4) if heads else None, "min_counted_share": MIN_COUNTED_SHARE,
        "not_head_share": round(not_heads / found, 4) if found else None, "max_not_head_share": MAX_NOT_HEAD_SHARE,
        "warning": None,
    }  # fmt: skip
    why = None
    if heads and sperm < MIN_COUNTED_SHARE * heads:
        why = f"only {sperm} of the {heads} cells taken for heads were counted as sperm ({100 * sperm / heads:.0f}%)"
    elif found and not_heads > MAX_NOT_HEAD_SHARE * found:
        share = 100 * not_heads / found
        why = f"{not_heads} of the {found} objects found were set aside as not a head ({share:.0f}%), {sperm} counted"
    if why:
        verdict["warning"] = (
            f"{why}: the % normal describes a minority of the cells and is not to be used as it is. Review the cells "
            "set aside (set_aside.jsonl and their crops); check focus, magnification and stain; if this lab's cells "
            "differ from the bundle's training data, label some of them by class and adapt the bundle "
            "(`sperm-edge adapt BUNDLE --data LABELLED --out RUN`)"
        )
    return verdict


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion, as fractions (scipy's `binomtest`); None for n = 0."""
    if n <= 0:
        return None
    from scipy.stats import binomtest  # scipy.stats takes a while to import: only when a report needs it

    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


class Tally:
    """Counts per class and flag reasons, kept up to date one event at a time (a long run's live view asks for
    the summary often: it must not recount every event each time)."""

    def __init__(self, events: Sequence[dict] = ()) -> None:
        self.cells = self.flagged = 0
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.add(events)

    def add(self, events: Sequence[dict]) -> None:
        for event in events:
            self.cells += 1
            self.counts[event["class"]] += 1
            if event.get("flagged"):
                self.flagged += 1
                self.reasons.update(event.get("flag_reasons", []))

    def summary(self, classes: Sequence[str], normal_class: str | None) -> dict:
        """Counts per class, % normal with its interval, and the WHO-minimum warning."""
        excluded = [c for c in classes if NON_SPERM.search(c)]
        sperm = sum(n for c, n in self.counts.items() if c not in excluded)
        normal = self.counts.get(normal_class, 0) if normal_class else 0
        interval = wilson_interval(normal, sperm) if normal_class else None
        warning = None
        if sperm < WHO_MINIMUM:
            warning = f"only {sperm} sperm counted; WHO asks for at least {WHO_MINIMUM} for a morphology assessment"
        return {
            "cells": self.cells,
            "sperm_counted": sperm,
            "counts": {c: self.counts.get(c, 0) for c in classes},
            "normal_class": normal_class,
            "excluded_classes": excluded,
            "percent_normal": round(100.0 * normal / sperm, 2) if normal_class and sperm else None,
            "ci95": [round(100.0 * interval[0], 2), round(100.0 * interval[1], 2)] if interval else None,
            "who_minimum": WHO_MINIMUM,
            "warning": warning,
            "flagged": self.flagged,
            "flag_reasons": dict(self.reasons),
        }


def sample_summary(events: Sequence[dict], classes: Sequence[str], normal_class: str | None) -> dict:
    """Counts per class, % normal with its interval, and the WHO-minimum warning, from the events."""
    return Tally(events).summary(classes, normal_class)


def build_report(
    events: Sequence[dict],
    classes: Sequence[str],
    normal_class: str | None,
    run: dict,
    out_dir: str | Path | None = None,
) -> dict:
    """The report: `sample_summary` plus what ran (`run`: backend, source, timings, fps...) and flagged cells."""
    out_dir = Path(out_dir) if out_dir is not None else None
    flagged = []
    for event in events:
        if not event.get("flagged"):
            continue
        item = {k: event.get(k) for k in ("id", "class", "confidence", "flag_reasons", "crop")}
        heat = f"explanations/{int(event['id']):06d}.png"
        if out_dir is not None and (out_dir / heat).is_file():
            item["heatmap"] = heat
        flagged.append(item)
    summary = sample_summary(events, classes, normal_class)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **summary,
        "trust": count_trust(summary, run.get("set_aside")),
        **run,
        "flagged_cells": flagged,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_markdown(report: dict) -> str:
    """The report as Markdown, with flagged crops beside their heatmaps."""
    lines = ["# Sample report", ""]
    lines.append(
        f"Source `{report.get('source', '?')}`, mode {report.get('mode', '?')}, "
        f"backend {report.get('backend', {}).get('backend', '?')} "
        f"({report.get('backend', {}).get('precision', '?')}), {report.get('created', '')}."
    )
    run = report.get("run") or {}
    if run:
        lines.append(
            f"Sample `{run.get('sample_id') or '-'}`, operator {run.get('operator') or '-'}; run `{run.get('run_id')}` "
            f"on {run.get('host')}, {run.get('software')}; bundle `{run.get('bundle')}` (manifest sha256 "
            f"`{str(run.get('bundle_sha256'))[:16]}…`)."
        )
    camera = report.get("camera")
    if camera:
        settings = ", ".join(f"{k} {v}" for k, v in camera.get("settings", {}).items())
        lines.append(f"Camera ({camera['sdk']}): {camera.get('model')} {camera.get('serial') or ''}, {settings}; "
                     f"{camera['frames']} frames, {camera['dropped_by_camera']} dropped by the camera, "
                     f"{camera['failed_buffers']} failed buffers, {camera['grab_timeouts']} timeouts.")  # fmt: skip
    images = report.get("images")
    if images and images.get("skipped_low_disk"):
        lines.append(f"> **Disk nearly full:** {images['skipped_low_disk']} flagged cells kept no image (less than "
                     f"{images['min_free_mb']:g} MB free); their events are in events.jsonl.")  # fmt: skip
    if images and images.get("frames_skipped"):
        lines.append(f"Full frames were saved for the first {images['max_frames']} flagged cells only "
                     f"({images['frames_skipped']} more kept their crop).")  # fmt: skip
    status = report.get("status")
    if status:
        lines.append(f"Status: **{status}**" + (f": {report['error']}" if report.get("error") else "") + ".")
    lines.append("")
    if report.get("warning"):
        lines += [f"> **Warning:** {report['warning']}.", ""]
    trust = report.get("trust") or {}
    if trust.get("warning"):
        lines += [f"> **Do not use this % normal as it is:** {trust['warning']}.", ""]
    if report.get("percent_normal") is not None:
        lo, hi = report["ci95"]
        lines.append(
            f"**Normal forms: {report['percent_normal']:.1f}%** (95% Wilson interval {lo:.1f}-{hi:.1f}%) "
            f"of {report['sperm_counted']} sperm counted."
        )
    else:
        lines.append(f"{report['sperm_counted']} sperm counted (the bundle names no normal class).")
    lines += ["", "| class | cells | share |", "| --- | ---: | ---: |"]
    total = max(1, report["cells"])
    for cls, n in report["counts"].items():
        note = " (not sperm: left out of %)" if cls in report.get("excluded_classes", []) else ""
        lines.append(f"| {cls}{note} | {n} | {100.0 * n / total:.1f}% |")
    reasons = ", ".join(f"{k} {v}" for k, v in report["flag_reasons"].items()) or "none"
    lines += ["", f"Flagged for review: {report['flagged']} ({reasons}).", ""]
    set_aside = report.get("set_aside")
    if set_aside:
        unlike, not_heads = set_aside.get("unlike_training", set_aside["cells"]), set_aside.get("not_a_head", 0)
        parts = [f"{not_heads} objects the head verifier judged not one sperm head"] if not_heads else []
        if unlike:
            parts.append(f"{unlike} objects unlike every validation cell of the training data (drift score above "
                         f"{set_aside.get('threshold', '?')})")  # fmt: skip
        lines += [
            f"Set aside, not counted: {' and '.join(parts)}, listed in `{set_aside['file']}` with their crops in "
            "`flagged/`: review them (debris, tails, fragments, or cells of an unfamiliar look).",
            "",
        ]
    verifier = report.get("verifier")
    if verifier is not None and not verifier.get("available", True):
        lines += [f"> {verifier['note']}", ""]
    drift = report.get("drift")
    if drift is not None and drift.get("warning"):
        lines += [f"> **Drift warning:** {drift_message(drift)}.", ""]
    else:
        lines += [f"Drift check: {drift_message(drift)}.", ""]
    stages = report.get("stages_ms", {})
    if stages:
        lines += [
            "## Performance",
            "",
            f"{report.get('frames', 0)} frames at **{report.get('fps', 0):.1f} FPS**.",
            "",
            "| stage | mean ms | p50 ms | p95 ms |",
            "| --- | ---: | ---: | ---: |",
        ]
        for stage, row in stages.items():
            lines.append(f"| {stage} | {_ms(row.get('mean'))} | {_ms(row.get('p50'))} | {_ms(row.get('p95'))} |")
        lines.append("")
    truth = report.get("truth")
    if truth:
        lines += [
            "## Against ground truth",
            "",
            f"Recall {truth['recall']:.3f} ({truth['counted']} of {truth['cells']} cells), "
            f"double counts {truth['double_counts']}, false counts {truth['false_counts']}.",
            "",
        ]
    cells = report.get("flagged_cells", [])
    if cells:
        explained = report.get("explanations") or {}
        trust = explained.get("trust")
        lines += ["## Flagged cells", ""]
        if trust and trust.get("verdict"):
            lines += [f"Heatmaps: {trust['verdict']} (measured when the bundle was exported).", ""]
        lines += [
            f"| id | class | confidence | reasons | crop | {explained.get('method', 'Grad-CAM++')} |",
            "| ---: | --- | ---: | --- | --- | --- |",
        ]
        for cell in cells[:MAX_THUMBNAILS]:
            crop = f"![crop]({cell['crop']})" if cell.get("crop") else ""
            heat = f"![heatmap]({cell['heatmap']})" if cell.get("heatmap") else "-"
            lines.append(
                f"| {cell['id']} | {cell['class']} | {cell['confidence']:.2f} | "
                f"{', '.join(cell.get('flag_reasons') or [])} | {crop} | {heat} |"
            )
        if len(cells) > MAX_THUMBNAILS:
            lines.append(f"\n{len(cells) - MAX_THUMBNAILS} more in report.json.")
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict) -> tuple[Path, Path]:
    """Write `report.json` and `report.md` atomically."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_bytes(out_dir / "report.md", render_markdown(report).encode())
    return out_dir / "report.json", out_dir / "report.md"


def rebuild_report(run_dir: str | Path) -> dict:
    """report.json and report.md of a run folder, rebuilt from its events.jsonl (and run header).

    For a run that ended without its report (killed, power cut) the status is `aborted`; a run that
    wrote one keeps its status, timings and drift verdict, and its counts are taken from the log again.
    """
    run_dir = Path(run_dir)
    log_path = run_dir / EVENTS_FILE
    if not log_path.is_file():
        raise SpermEdgeError(f"{run_dir} is not a run folder: it has no {EVENTS_FILE}")
    header = read_run_header(log_path)
    if header is None:
        raise SpermEdgeError(f"{log_path} has no run header (its first line): it was written before run headers "
                             "existed, or is not a sperm-edge event log")  # fmt: skip
    events = read_events(log_path)
    previous = _previous_report(run_dir / "report.json")
    recomputed = {*sample_summary([], [], None), "created", "flagged_cells"}
    info = {k: v for k, v in previous.items() if k not in recomputed}
    info["run"] = {k: v for k, v in header.items() if k != "type"}
    info.setdefault("source", header.get("source"))
    info.setdefault("mode", header.get("mode"))
    info.setdefault("backend", {"backend": header.get("backend"), "precision": header.get("precision")})
    if not previous:
        info["status"] = "aborted"
        info["error"] = "the run ended without writing its report (killed or lost power?); rebuilt from events.jsonl"
    if "drift" not in info and (drift := _drift(header, events, run_dir)) is not None:
        info["drift"] = drift
    info["rebuilt"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = build_report(events, header["classes"], header.get("normal_class"), info, run_dir)
    write_report(run_dir, report)
    return report


def _previous_report(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s): rebuilt from the event log alone", path, err)
        return {}
    return report if isinstance(report, dict) else {}


def _drift(header: dict, events: list[dict], run_dir: Path) -> dict | None:
    """The drift verdict from the cells' scores, with the bundle's drift model when the bundle is still there."""
    from sperm_edge.bundle import load_bundle

    try:
        model = load_bundle(header["bundle"]).drift_model()
    except (SpermEdgeError, OSError, KeyError) as err:
        log.warning("no drift verdict: the run's bundle cannot be loaded (%s)", err)
        return None
    aside = read_events(run_dir / SET_ASIDE_FILE) if (run_dir / SET_ASIDE_FILE).is_file() else []
    return run_drift(model, events + aside, header.get("mode", "crop"))
