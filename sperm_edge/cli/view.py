"""`sperm-edge view RUN_DIR`: the live view's page over a finished run (report, flagged cells, explanations)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from sperm_edge.cli._app import app

console = Console()


@app.command()
def view(
    run_dir: Path = typer.Argument(..., help="A run folder written by `sperm-edge run`."),
    port: int = typer.Option(8050, min=0, max=65535, help="Port (0: any free one)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; any but loopback needs --token."),
    token: str = typer.Option(None, help="Token the page requires; auto: generate one."),
) -> None:
    """Serve the page over a finished run until Ctrl-C."""
    from sperm_edge.view import RunView, resolve_token

    with RunView(run_dir, host, port, resolve_token(host, token)) as served:
        console.print(f"{run_dir}: [bold]{served.url}[/] (Ctrl-C to stop)", soft_wrap=True, highlight=False)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
