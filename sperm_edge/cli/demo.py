"""`sperm-edge demo`: the whole tool chain on embedded synthetic data, offline, in a few minutes.

It runs the same commands a user would type, in order (synthetic data, train, export, bench,
synthetic slide video, run with explanations), so the demo exercises exactly what ships, and
prints each command before it runs. The summary is read back from the files they wrote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sperm_edge.cli._app import app

console = Console()


def demo_steps(
    out: Path, seed: int, crops: int, frames: int, img_size: int, epochs: tuple[int, int]
) -> list[list[str]]:
    """The commands of the demo, as argument lists for `sperm-edge`."""
    sets, run, bundle, verifier = out / "data", out / "run", out / "bundle", out / "verifier"
    data = sets / "hushem"
    return [
        ["data", "synth", "--out", data, "--n", crops, "--style", "hushem", "--seed", seed],
        # the head verifier learns heads from both styles, and debris from the SMIDS-style set's Non-Sperm
        ["data", "synth", "--out", sets / "smids", "--n", max(60, crops // 2), "--style", "smids", "--seed", seed],
        [
            "train-verifier",
            "--data",
            sets,
            "--out",
            verifier,
            "--img-size",
            48,
            "--phase1-epochs",
            1,
            "--phase2-epochs",
            2,
            "--seed",
            seed,
        ],
        [
            "train",
            "--data",
            data,
            "--arch",
            "cbam_efficientnet_lite0",
            "--out",
            run,
            "--img-size",
            img_size,
            "--phase1-epochs",
            epochs[0],
            "--phase2-epochs",
            epochs[1],
            "--seed",
            seed,
        ],
        ["export", run, "--out", bundle, "--int8", "--allow-drop", "--verifier", verifier],
        [
            "bench",
            bundle,
            "--data",
            data,
            "--split",
            "test",
            "--batch",
            "1,8",
            "--iters",
            20,
            "--rounds",
            4,
            "--no-memory",
            "--no-stream",
            "--out",
            out / "bench",
        ],
        ["data", "synth-video", "--out", out / "slide.mp4", "--frames", frames, "--seed", seed],
        [
            "run",
            bundle,
            "--source",
            out / "slide.mp4",
            "--headless",
            "--explain",
            "flagged",
            "--out",
            out / "stream",
            "--truth",
            out / "slide.json",
        ],
    ]


def _summary(out: Path, seconds: float) -> Table:
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    report = json.loads((out / "stream" / "report.json").read_text())
    bench = json.loads((out / "bench" / "bench.json").read_text())
    table = Table(title=f"sperm-edge demo: {seconds / 60:.1f} min", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("test accuracy (synthetic)", f"{metrics['accuracy']:.3f} (macro-F1 {metrics['macro_f1']:.3f})")
    for precision, entry in manifest.get("models", {}).items():
        accuracy = (entry.get("accuracy") or {}).get("accuracy")
        if accuracy is not None:
            table.add_row(f"bundle {precision}", f"accuracy {accuracy:.3f}")
    for row in bench:
        if row.get("status") == "ok" and row.get("batch") == 1:
            table.add_row(f"latency {row['backend']} {row['precision']}", f"{row['p50_ms']:.1f} ms (batch 1)")
    table.add_row(
        "stream",
        f"{report.get('fps', 0):.1f} FPS, {report.get('cells', 0)} cells counted, {report.get('flagged', 0)} flagged",
    )
    if report.get("percent_normal") is not None:
        lo, hi = report["ci95"]
        table.add_row("normal forms", f"{report['percent_normal']:.1f}% (95% CI {lo:.1f}-{hi:.1f})")
    truth = report.get("truth")
    if truth:
        table.add_row("cell finding", f"recall {truth['recall']:.3f}, double counts {truth['double_counts']}")
    verifier = manifest.get("verifier")
    if verifier:
        test = verifier["test"]
        aside = (report.get("set_aside") or {}).get("not_a_head", 0)
        table.add_row(
            "head verifier",
            f"{verifier.get('precision', 'fp32').upper()}, threshold {verifier['threshold']:.3f}: keeps "
            f"{test['head_recall']:.3f} of test heads, rejects {test['not_head_rejection']:.3f} of the rest; "
            f"{aside} stream objects set aside as not a head",
        )
    on_heads = (truth or {}).get("explanations_on_heads")
    if on_heads:
        table.add_row(
            "heatmaps on the heads",
            f"{on_heads['peak_on_head']} of {on_heads['explained']} explained cells peak on their true head",
        )
    heatmaps = sorted((out / "stream" / "explanations").glob("*.png"))
    table.add_row("heatmaps", f"{len(heatmaps)} in {out / 'stream' / 'explanations'}")
    explain = manifest.get("explain", {})
    if explain.get("pointing") is not None:
        quality = explain["quality"]
        drawn = explain.get("explainer") if explain.get("maps") == "explainer" else explain
        table.add_row(
            "explanations",
            f"pointing {explain['pointing']:.2f} (the map's peak on the head, {quality['pointing']['n']} validation "
            f"crops); heat on the head {explain['heat_share']:.2f} vs {explain['heat_share_centre_matched']:.2f} "
            f"for a centred blob as spread; {drawn['method']} on {drawn['layer']}",
        )
    table.add_row("report", str(out / "stream" / "report.md"))
    return table


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Folder for every artefact of the demo."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier demo in --out."),
    seed: int = typer.Option(0, help="Seed of the synthetic data and of training."),
    crops: int = typer.Option(400, min=40, help="Synthetic training crops."),
    frames: int = typer.Option(60, min=5, help="Frames of the synthetic slide video."),
    img_size: int = typer.Option(96, min=32, help="Network input size."),
    phase1_epochs: int = typer.Option(4, min=0),
    phase2_epochs: int = typer.Option(6, min=0),
) -> None:
    """Generate data, train, export (ONNX + INT8), benchmark, classify a slide video, explain: all offline."""
    from sperm_edge.errors import SpermEdgeError
    from sperm_edge.io import prepare_output_dir

    prepare_output_dir(out, force)
    started = time.perf_counter()
    for args in demo_steps(out, seed, crops, frames, img_size, (phase1_epochs, phase2_epochs)):
        args = [str(a) for a in args]
        console.rule(f"[bold]sperm-edge {' '.join(args)}")
        code = app(args=args, prog_name="sperm-edge", standalone_mode=False)
        if code not in (None, 0):
            raise SpermEdgeError(f"demo step `sperm-edge {' '.join(args)}` exited with code {code}")
    console.print(_summary(out, time.perf_counter() - started))
