"""Command-line entry point: `sperm-edge <command>`. Each stage registers its commands in its own module."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

from sperm_edge.cli import bench, data, demo, doctor, export, report, run, train, view  # noqa: F401  (registers)
from sperm_edge.cli._app import app
from sperm_edge.errors import SpermEdgeError

console = Console(stderr=True)


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one red line on stderr and exit 2 (75, EX_TEMPFAIL: a live source lost).

    An OSError that reaches here is the machine's, not the code's (a full disk, a file-size or open-files
    limit, a folder without write permission): one red line that names the file, and exit 1.
    """
    _setup_logging()
    try:
        app(args=argv, prog_name="sperm-edge")
    except SpermEdgeError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except OSError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)
