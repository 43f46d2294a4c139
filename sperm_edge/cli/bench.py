"""`sperm-edge bench`: every backend and precision on one bundle, side by side, with machine facts."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sperm_edge.cli._app import app

console = Console()


def _wide() -> Console:
    """Tables go to the terminal at its width, and to pipes and logs at 160 columns instead of rich's 80."""
    return console if console.is_terminal else Console(width=160)


def parse_batches(text: str) -> tuple[int, ...]:
    """`"1,8,32"` -> (1, 8, 32); anything but positive integers is a user error."""
    from sperm_edge.errors import SpermEdgeError

    try:
        batches = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        batches = ()
    if not batches or any(b < 1 for b in batches):
        raise SpermEdgeError(f"--batch must be positive integers separated by commas (e.g. 1,8,32), not {text!r}")
    return batches


def _table(title: str, display: tuple, cells: list[list[str]], bold: list[bool] | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for header, _, _ in display:
        table.add_column(
            header,
            justify="left" if header in ("variant", "mode", "explain", "engine") else "right",
            no_wrap=header == "variant",
        )
    for i, row in enumerate(cells):
        table.add_row(*row, style="bold" if bold and bold[i] else None)
    return table


def _print_rows(rows: list[dict], machine_line: str) -> None:
    from sperm_edge.bench.report import ACCURACY_DISPLAY, SPEED_DISPLAY, accuracy_rows, not_measured, speed_rows

    reference = [bool(r.get("reference")) for r in rows if r["status"] == "ok"]
    out = _wide()
    out.print(_table(f"speed: {machine_line}", SPEED_DISPLAY, speed_rows(rows), reference))
    accuracy = accuracy_rows(rows)
    if accuracy:
        out.print(_table("accuracy on the labelled set", ACCURACY_DISPLAY, accuracy))
    notes = not_measured(rows)
    if notes:
        table = Table(title="not measured", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("variant", "status", "why"):
            table.add_column(column, overflow="fold", no_wrap=column == "variant")
        for key, status, reason in notes:
            table.add_row(key, f"[{'yellow' if status == 'unavailable' else 'red'}]{status}[/]", reason)
        out.print(table)


def _print_stream(stream: dict) -> None:
    from sperm_edge.bench.report import STREAM_DISPLAY, stream_rows

    _wide().print(_table("end-to-end stream (the runtime; frames read unpaced)", STREAM_DISPLAY, stream_rows(stream)))
    if stream.get("error"):
        console.print(f"[red]stream measurement failed:[/] {stream['error']}")
    cam = stream.get("gradcam")
    if cam:
        console.print(
            f"Grad-CAM++ of one crop: p50 [bold]{cam['p50_ms']:.1f} ms[/], p95 {cam['p95_ms']:.1f} ms "
            f"({cam['threads']} thread(s), {cam['crops']} crops)"
        )


def _command_line(
    bundle: Path,
    backends: str,
    batch: str,
    data: Path | None,
    split: str,
    iters: int,
    warmup: int,
    rounds: int,
    threads: int | None,
    memory: bool,
    stream: bool,
    stream_frames: int,
    stream_backend: str,
    out: Path,
) -> str:
    """The command that reproduces this run, every setting spelled out (recorded in machine.json and bench.md)."""
    args = ["sperm-edge", "bench", str(bundle), "--backends", backends, "--batch", batch]
    if data is not None:
        args += ["--data", str(data), "--split", split]
    args += ["--iters", str(iters), "--warmup", str(warmup), "--rounds", str(rounds)]
    if threads:
        args += ["--threads", str(threads)]
    args += [] if memory else ["--no-memory"]
    args += ["--stream-frames", str(stream_frames), "--stream-backend", stream_backend] if stream else ["--no-stream"]
    return shlex.join([*args, "--out", str(out)])


@app.command()
def bench(
    bundle: Path = typer.Argument(..., help="Bundle folder written by `sperm-edge export`."),
    backends: str = typer.Option(
        "all",
        help="Comma-separated: torch-eager, torch-channels-last, ort-cpu, ort-cpu+tta (8 views per crop), ort-cuda, "
        "ort-trt, trt, triton://HOST:PORT/MODEL (a Triton server's model), or all. The reference (torch-eager) is "
        "always measured.",
    ),
    batch: str = typer.Option("1,8,32", help="Batch sizes, comma-separated."),
    data: Path = typer.Option(None, help="Labelled class-folder set: accuracy, macro-F1 and agreement per row."),
    split: str = typer.Option("all", help="With --data: all images, or the checkpoint's recorded train/val/test."),
    iters: int = typer.Option(50, min=1, help="Timed calls per variant and batch size (spread over the rounds)."),
    warmup: int = typer.Option(5, min=0, help="Untimed calls per variant and batch size before the first round."),
    rounds: int = typer.Option(5, min=1, help="Rounds that alternate the variants, so drift hits all alike."),
    threads: int = typer.Option(None, min=1, help="Intra-op threads of every engine (default: the usable cores)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Peak RSS per variant (a child process each)."),
    stream: bool = typer.Option(
        True,
        "--stream/--no-stream",
        help="End-to-end runtime FPS per mode, with and without Grad-CAM++, and its latency.",
    ),
    stream_frames: int = typer.Option(30, min=1, help="Frames per stream measurement."),
    stream_backend: str = typer.Option("auto", help="Engine of the stream runs (the runtime's: auto, ort-cpu, ...)."),
    out: Path = typer.Option(
        Path("runs/bench"),
        help="Folder for bench.json, machine.json, bench.csv, bench.md, bench.png (and stream.json).",
    ),
) -> None:
    """Latency, throughput, memory and accuracy of every backend and precision this machine can run."""
    from sperm_edge.bench import BenchConfig, StreamConfig, run_benchmark, write_all
    from sperm_edge.bench.machine import describe_machine
    from sperm_edge.bench.variants import parse_backends

    cfg = BenchConfig(
        bundle=bundle,
        backends=parse_backends(backends),
        batches=parse_batches(batch),
        iters=iters,
        warmup=warmup,
        rounds=rounds,
        data=data,
        split=split,
        threads=threads,
        memory=memory,
        stream=StreamConfig(frames=stream_frames, backend=stream_backend) if stream else None,
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("loading", total=None)
        result = run_benchmark(
            cfg, lambda what, done, total: progress.update(task, description=what, completed=done, total=total)
        )
    result.machine["command"] = _command_line(
        bundle,
        backends,
        batch,
        data,
        split,
        iters,
        warmup,
        rounds,
        threads,
        memory,
        stream,
        stream_frames,
        stream_backend,
        out,
    )
    paths = write_all(out, result.rows, result.machine, result.stream)
    _print_rows(result.rows, describe_machine(result.machine))
    if result.stream is not None:
        _print_stream(result.stream)
    console.print("written: " + ", ".join(str(p) for p in paths))
