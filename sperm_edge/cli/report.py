"""`sperm-edge report`: a run folder's report, rebuilt from its event log."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from sperm_edge.cli._app import app

console = Console()


@app.command()
def report(run_dir: Path = typer.Argument(..., help="Run folder written by `sperm-edge run`.")) -> None:
    """Rebuild report.json and report.md from events.jsonl (after a crash or SIGKILL too)."""
    from sperm_edge.runtime.report import rebuild_report

    rebuilt = rebuild_report(run_dir)
    line = f"{rebuilt['cells']} cells counted, status {rebuilt.get('status', '?')}"
    if rebuilt.get("percent_normal") is not None:
        lo, hi = rebuilt["ci95"]
        line += f"; normal forms {rebuilt['percent_normal']:.1f}% (95% CI {lo:.1f}-{hi:.1f})"
    console.print(line)
    console.print(f"written: {run_dir / 'report.json'}, {run_dir / 'report.md'}")
