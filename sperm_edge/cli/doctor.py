"""`sperm-edge doctor`: what this machine can run, and the command that fixes each missing piece."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sperm_edge.cli._app import app

console = Console()


@app.command()
def doctor(
    bundle: Path = typer.Option(None, help="Also check this bundle: its engines, and what --backend auto picks."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    root: Path = typer.Option(Path("/"), hidden=True, help="Read system files below this folder (tests)."),
) -> None:
    """Python, platform (Jetson model, L4T/JetPack), CUDA, cuDNN, TensorRT, ONNX Runtime, GPU, cameras.

    Exit code 0 when the bundle (or, without --bundle, some inference engine) can run here.
    """
    from sperm_edge.runtime.doctor import diagnose

    report = diagnose(bundle, root)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    if not report["ok"]:
        raise typer.Exit(1)


def _print(report: dict) -> None:
    board = report["platform"]["jetson"]
    table = Table(title="this machine", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("found")
    plat = report["platform"]
    table.add_row("python", f"{report['python']} ({report['executable']})")
    table.add_row("platform", f"{plat['system']} {plat['machine']} {plat['release']}")
    if board:
        table.add_row("jetson", f"{board['model']}, L4T {board['l4t']}, JetPack {board['jetpack'] or '?'}")
    ort = report["onnxruntime"]
    table.add_row("onnxruntime", f"{ort['version']}: {', '.join(ort['providers'])}" if ort["version"] else "-")
    trt = report["tensorrt"]
    table.add_row("tensorrt", f"{trt['version']}{'' if trt['python'] else ' (library only)'}" if trt else "-")
    cuda = report["cuda"]
    table.add_row("cuda", f"{cuda['version']}, cuDNN {cuda['cudnn'] or '-'}" if cuda else "-")
    table.add_row("gpu", ", ".join(f"{g['name']} (sm {g['compute_capability']})" for g in report["gpus"]) or "-")
    cams = ", ".join(c["device"] + (f" {c['name']}" if c["name"] else "") for c in report["cameras"])
    table.add_row("cameras", cams or "-")
    csi = report["csi"]
    table.add_row("csi://", f"nvarguscamerasrc {'yes' if csi['nvarguscamerasrc'] else 'no'}, "
                  f"OpenCV GStreamer {'yes' if csi['opencv_gstreamer'] else 'no'}")  # fmt: skip
    for name, row in report["backends"].items():
        table.add_row(f"backend {name}", "[green]yes[/]" if row["available"] else f"no: {row['reason']}")
    console.print(table)
    bundle = report.get("bundle")
    if bundle:
        console.print(f"[bold]bundle[/] {bundle['path']}")
        for engine in bundle["engines"]:
            state = "[green]matches[/]" if engine["matches"] else f"[yellow]does not match[/]: {engine['reason']}"
            console.print(f"  engine {engine['file']} ({engine['precision']}): {state}")
        if not bundle["engines"]:
            console.print("  no TensorRT engines")
        console.print(
            f"  --backend auto: [bold]{bundle['auto_backend']} {bundle['auto_precision']}[/] ({bundle['auto_reason']})"
        )
    for fix in report["fixes"]:
        console.print(f"[yellow]missing:[/] {fix['missing']}\n  fix: {fix['fix']}", highlight=False)
    console.print("[green]ready[/]" if report["ok"] else "[red]cannot run here yet[/] (see the fixes above)")
