"""`sperm-edge report`: a run folder's report, rebuilt from its event log; the clinical report on request."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from sperm_edge.cli._app import app

console = Console()


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="Run folder written by `sperm-edge run`."),
    pdf: bool = typer.Option(False, "--pdf", help="Also write RUN/report.pdf: the morphology report to sign."),
    fhir: bool = typer.Option(False, "--fhir", help="Also write RUN/report.fhir.json: a FHIR R4 Bundle."),
    csv: bool = typer.Option(False, "--csv", help="Also write RUN/cells.csv: one row per counted cell."),
) -> None:
    """Rebuild report.json and report.md from events.jsonl (after a crash or SIGKILL too); write the clinical
    report's files when asked."""
    from sperm_edge.runtime.report import rebuild_report

    rebuilt = rebuild_report(run_dir)
    line = f"{rebuilt['cells']} cells counted, status {rebuilt.get('status', '?')}"
    if rebuilt.get("percent_normal") is not None:
        lo, hi = rebuilt["ci95"]
        line += f"; normal forms {rebuilt['percent_normal']:.1f}% (95% CI {lo:.1f}-{hi:.1f})"
    console.print(line)
    written = [run_dir / "report.json", run_dir / "report.md"]
    if pdf or fhir or csv:
        from sperm_edge.clinical import load_record

        record = load_record(run_dir, rebuilt)
        if pdf:
            from sperm_edge.clinical.pdf import write_pdf

            written.append(write_pdf(record, run_dir / "report.pdf"))
        if fhir:
            from sperm_edge.clinical.fhir import write_fhir

            written.append(write_fhir(record, run_dir / "report.fhir.json"))
        if csv:
            from sperm_edge.clinical.cells_csv import write_cells_csv

            written.append(write_cells_csv(record, run_dir / "cells.csv"))
    console.print("written: " + ", ".join(str(p) for p in written))
