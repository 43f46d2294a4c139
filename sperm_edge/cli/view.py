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
    token: str = typer.Option(None, help="Token the page requires; auto: generate one (or SPERM_EDGE_TOKEN)."),
    token_file: Path = typer.Option(None, help="File holding the token."),
) -> None:
    """Serve the page over a finished run until Ctrl-C."""
    from sperm_edge.view import RunView, announce, resolve_token

    secret = resolve_token(host, token, token_file)
    with RunView(run_dir, host, port, secret) as served:
        line = announce(served.url, secret, token == "auto" and token_file is None, run_dir)
        console.print(f"{run_dir}: [bold]{line}[/] (Ctrl-C to stop)", soft_wrap=True, highlight=False)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
