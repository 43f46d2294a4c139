"""Benchmark outputs: bench.json (a list of rows), machine.json, bench.csv, bench.md, bench.png, stream.json.

Every file is written atomically, so a reader never sees half a report. The terminal table is the
CLI's business (rich); this module gives it `table_rows`, the same selection the Markdown uses.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from sperm_edge.bench.machine import describe_machine
from sperm_edge.io import atomic_path, atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

COLUMNS = (
    "backend",
    "precision",
    "batch",
    "status",
    "reason",
    "device",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "min_ms",
    "images_per_s",
    "speedup",
    "speedup_same_batch",
    "accuracy",
    "macro_f1",
    "agreement",
    "max_abs_diff",
    "n_images",
    "peak_rss_mb",
    "rss_delta_mb",
    "memory_error",
    "model_mb",
    "model_file",
    "iters",
    "threads",
    "reference",
)
# (header, row key, format) of the human-readable tables (terminal and Markdown). "variant" is backend + precision.
SPEED_DISPLAY = (
    ("variant", "variant", "{}"),
    ("batch", "batch", "{}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p95 ms", "p95_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("img/s", "images_per_s", "{:.1f}"),
    ("× ref", "speedup", "{:.2f}"),
    ("× same batch", "speedup_same_batch", "{:.2f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
    ("model MB", "model_mb", "{:.1f}"),
)
ACCURACY_DISPLAY = (
    ("variant", "variant", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("macro-F1", "macro_f1", "{:.4f}"),
    ("agreement", "agreement", "{:.4f}"),
    ("max |Δ logit|", "max_abs_diff", "{:.3g}"),
    ("images", "n_images", "{}"),
)
LEGEND = (
    "`× ref`: images/s as a ratio to PyTorch eager FP32 at batch 1 (the reference row, measured in the same run); "
    "`× same batch`: PyTorch eager's p50 at the row's batch size over the row's p50. `agreement`: share of images "
    "whose top-1 class is PyTorch FP32's; `max |Δ logit|`: largest logit difference from it."
)


def fmt(value: object, pattern: str) -> str:
    if value is None or value == "":
        return "—"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def variant_name(row: dict) -> str:
    return f"{row['backend']} {row['precision']}"


def _cells(row: dict, display: tuple) -> list[str]:
    return [variant_name(row) if key == "variant" else fmt(row.get(key), pattern) for _, key, pattern in display]


def speed_rows(rows: list[dict]) -> list[list[str]]:
    """One line per measured variant and batch size."""
    return [_cells(row, SPEED_DISPLAY) for row in rows if row["status"] == "ok"]


def accuracy_rows(rows: list[dict]) -> list[list[str]]:
    """One line per measured variant (accuracy does not depend on the batch size); empty without --data."""
    first: dict[str, dict] = {}
    for row in rows:
        if row["status"] == "ok" and row.get("accuracy") is not None:
            first.setdefault(variant_name(row), row)
    return [_cells(row, ACCURACY_DISPLAY) for row in first.values()]


def not_measured(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(variant, status, reason) once per variant that was unavailable or failed."""
    notes: dict[str, tuple[str, str, str]] = {}
    for row in rows:
        if row["status"] != "ok":
            notes.setdefault(variant_name(row), (variant_name(row), row["status"], row.get("reason") or ""))
    return list(notes.values())


def write_json(path: Path, rows: list[dict]) -> None:
    atomic_write_json(path, rows)


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    atomic_write_bytes(path, buffer.getvalue().encode())


STREAM_DISPLAY = (
    ("mode", "mode", "{}"),
    ("explain", "explain", "{}"),
    ("engine", "backend", "{}"),
    ("precision", "precision", "{}"),
    ("frames", "frames", "{}"),
    ("FPS", "fps", "{:.2f}"),
    ("cells/s", "cells_per_s", "{:.1f}"),
    ("network p50 ms", "network_ms_p50", "{:.1f}"),
    ("explained", "explained", "{}"),
    ("dropped", "explain_dropped", "{}"),
)


def stream_rows(stream: dict) -> list[list[str]]:
    """The stream runs as display cells (terminal and Markdown)."""
    return [[fmt(run.get(key), pattern) for _, key, pattern in STREAM_DISPLAY] for run in stream.get("runs", [])]


def md_table(headers: list[str], cells: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(c) + " |" for c in cells]


def stream_markdown(stream: dict) -> list[str]:
    lines = ["## End-to-end stream", "", *md_table([h for h, _, _ in STREAM_DISPLAY], stream_rows(stream))]
    if stream.get("error"):
        lines += ["", f"The stream measurement failed: {stream['error']}"]
    cam = stream.get("gradcam")
    if cam:
        lines += [
            "",
            f"Grad-CAM++ of one crop ({cam['threads']} thread(s), {cam['crops']} crops): "
            f"p50 {cam['p50_ms']:.1f} ms, p95 {cam['p95_ms']:.1f} ms, mean {cam['mean_ms']:.1f} ms.",
        ]
    return lines


def run_facts(machine: dict) -> list[str]:
    """How the run was made, from machine.json: timing settings, accuracy set, load average."""
    settings, facts = machine.get("settings", {}), []
    if settings:
        facts.append(
            f"timing: {settings['iters']} timed calls per row over {settings['rounds']} alternating rounds "
            f"after {settings['warmup']} warm-up calls, batch sizes {settings['batches']}"
        )
        if settings.get("data"):
            facts.append(
                f"accuracy set: {settings.get('n_images')} images of {settings['data']} ({settings.get('split')} split)"
            )
    load = machine.get("load_average")
    if load:
        facts.append(
            f"load average (1/5/15 min) before {load['before']}, after {load['after']}: "
            "above the core count means other work shared the cores"
        )
    return facts


def markdown(rows: list[dict], machine: dict, stream: dict | None = None) -> str:
    """The report as Markdown: machine, command, speed and accuracy tables, variants not measured, the stream."""
    lines = ["# sperm-edge benchmark", "", f"Machine: {describe_machine(machine)}.", ""]
    versions = machine.get("versions", {})
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    if machine.get("command"):
        lines += ["Command:", "", f"    {machine['command']}", ""]
    lines += [f"- {fact}" for fact in run_facts(machine)]
    lines += ["", "## Speed", "", *md_table([h for h, _, _ in SPEED_DISPLAY], speed_rows(rows))]
    accuracy = accuracy_rows(rows)
    if accuracy:
        lines += ["", "## Accuracy", "", *md_table([h for h, _, _ in ACCURACY_DISPLAY], accuracy)]
    notes = not_measured(rows)
    if notes:
        lines += ["", "## Not measured", ""]
        lines += [f"- `{key}`: {status} — {reason}" for key, status, reason in notes]
    lines += ["", LEGEND]
    if stream:
        lines += ["", *stream_markdown(stream)]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, rows: list[dict], machine: dict, stream: dict | None = None) -> None:
    atomic_write_bytes(path, markdown(rows, machine, stream).encode())


def write_chart(path: Path, rows: list[dict], title: str = "") -> None:
    """PNG: p50 latency per variant and batch (p95 whiskers, log scale) beside accuracy and agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in rows if r["status"] == "ok" and r.get("p50_ms") is not None]
    by = {(f"{r['backend']}\n{r['precision']}", r["batch"]): r for r in ok}
    variants = list(dict.fromkeys(label for label, _ in by))
    batches = sorted({batch for _, batch in by})
    fig, (ax_lat, ax_acc) = plt.subplots(1, 2, figsize=(max(10.0, 3.2 * len(variants)), 4.8))
    width = 0.8 / max(1, len(batches))
    x = np.arange(len(variants))
    for i, batch in enumerate(batches):
        p50 = np.asarray([by[(v, batch)]["p50_ms"] if (v, batch) in by else np.nan for v in variants])
        p95 = np.asarray([by[(v, batch)]["p95_ms"] if (v, batch) in by else np.nan for v in variants])
        err = np.clip(p95 - p50, 0, None)
        ax_lat.bar(
            x + (i + 0.5) * width - 0.4, p50, width, yerr=[np.zeros_like(err), err], capsize=2, label=f"batch {batch}"
        )
    ax_lat.set_xticks(x, variants, fontsize=8)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per call, ms (p50, whisker to p95)")
    ax_lat.legend(fontsize=8)
    ax_lat.set_title("latency")
    first = {label: row for (label, _), row in reversed(list(by.items()))}  # accuracy is the same at every batch
    accuracy = [first[v].get("accuracy") for v in variants]
    if any(a is not None for a in accuracy):
        agreement = [first[v].get("agreement") for v in variants]
        ax_acc.bar(x - 0.2, [np.nan if a is None else a for a in accuracy], 0.4, label="accuracy", color="tab:green")
        ax_acc.bar(
            x + 0.2,
            [np.nan if a is None else a for a in agreement],
            0.4,
            label="agreement with FP32",
            color="tab:purple",
        )
        ax_acc.set_ylim(0, 1.05)
        ax_acc.legend(fontsize=8, loc="lower right")
    else:
        ax_acc.text(0.5, 0.5, "no labelled data (--data)", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.set_xticks(x, variants, fontsize=8)
    ax_acc.set_title("accuracy")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_all(out: Path, rows: list[dict], machine: dict, stream: dict | None = None) -> list[Path]:
    """Every output file in `out` (stream.json only with stream figures); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / n for n in ("bench.json", "machine.json", "bench.csv", "bench.md", "bench.png")]
    write_json(paths[0], rows)
    atomic_write_json(paths[1], machine)
    write_csv(paths[2], rows)
    write_markdown(paths[3], rows, machine, stream)
    write_chart(paths[4], rows, describe_machine(machine))
    if stream is not None:
        paths.append(out / "stream.json")
        atomic_write_json(paths[-1], stream)
    return paths
