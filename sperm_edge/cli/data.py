"""`sperm-edge data ...`: synthetic crop sets, fields and panning videos, and fields composed from real crops."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sperm_edge.cli._app import data_app

console = Console()


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create: one sub-folder per class, masks in _masks/."),
    n: int = typer.Option(400, "--n", help="Number of crops, balanced over the classes."),
    style: str = typer.Option("hushem", "--style", help="hushem (4 classes, 131x131) or smids (3 classes)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same set."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Write a synthetic class-folder crop data set laid out like HuSHeM or SMIDS."""
    from sperm_edge.data.synthetic import get_style, write_crop_dataset

    st = get_style(style)
    start = time.perf_counter()
    with _progress(f"rendering {st.name} crops") as update:
        path = write_crop_dataset(out, n, st, seed, force=force, progress=update)
    rate = n / max(time.perf_counter() - start, 1e-9)
    console.print(f"wrote {n} {st.name} crops ({', '.join(st.classes)}) with masks to [bold]{path}[/] ({rate:.0f}/s)")


@data_app.command("synth-field")
def synth_field(
    out: Path = typer.Option(..., "--out", help="PNG to write; ground truth goes beside it as .json."),
    style: str = typer.Option("hushem", "--style", help="hushem or smids."),
    cells: int | None = typer.Option(None, "--cells", help="Number of cells (default: random 5-30)."),
    width: int = typer.Option(1280, "--width"),
    height: int = typer.Option(960, "--height"),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="Replace existing files."),
) -> None:
    """Write one synthetic microscope field (many cells) with its ground truth."""
    import json

    from sperm_edge.data.synthetic import write_field

    path = write_field(out, seed, style, (width, height), cells, force=force)
    n = len(json.loads(path.with_suffix(".json").read_text())["cells"])
    gt = path.with_suffix(".json").name
    console.print(f"wrote a {width}x{height} field with {n} cells to [bold]{path}[/] (+ {gt})")


@data_app.command("synth-video")
def synth_video(
    out: Path = typer.Option(..., "--out", help="Video to write (.mp4); ground truth goes beside it as .json."),
    frames: int = typer.Option(150, "--frames", help="Number of frames."),
    style: str = typer.Option("hushem", "--style", help="hushem or smids."),
    seed: int = typer.Option(0, "--seed"),
    fps: float = typer.Option(15.0, "--fps"),
    width: int = typer.Option(1280, "--width"),
    height: int = typer.Option(960, "--height"),
    force: bool = typer.Option(False, "--force", help="Replace existing files."),
) -> None:
    """Write a clip panning across a synthetic slide, with per-frame ground truth and stable cell ids."""
    from sperm_edge.data.synthetic import write_video

    with _progress("rendering frames") as update:
        path = write_video(out, frames, seed, style, (width, height), fps, force=force, progress=update)
    gt = path.with_suffix(".json").name
    console.print(f"wrote {frames} frames ({width}x{height} @ {fps:g} fps) to [bold]{path}[/] (+ {gt})")


@data_app.command("real-field")
def real_field(
    data: Path = typer.Option(..., "--data", help="Folder holding the real sets hushem/ and smids/ (../shared/data)."),
    out: Path = typer.Option(..., "--out", help="Folder to create: clip.mp4 + clip.json, field.png + field.json."),
    cells: int = typer.Option(40, "--cells", min=1, help="Sperm cells on the slide (debris comes on top)."),
    frames: int = typer.Option(90, "--frames", min=1, help="Frames of the panning clip."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same slide and clip."),
    style: str = typer.Option("hushem", "--style", help="hushem or smids: the set the cells come from."),
    look: str = typer.Option(
        "plain",
        "--look",
        help="How the field departs from a plain composition: plain, tails, halos, uneven, defocus, jpeg, "
        "zoom-out, zoom-in or dense (see `sperm_edge.data.real_fields.looks`).",
    ),
    width: int = typer.Option(960, "--width"),
    height: int = typer.Option(720, "--height"),
    fps: float = typer.Option(15.0, "--fps"),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Compose a slide from real labelled crops and write a clip panning over it, with per-frame ground truth."""
    from sperm_edge.data.real_fields import write_real_field

    with _progress(f"composing a {style} field ({look} look) from real crops") as update:
        path = write_real_field(data, out, cells, frames, seed, style, (width, height), fps, look, force=force,
                                progress=update)  # fmt: skip
    console.print(f"wrote {frames} frames ({width}x{height}) of real {style} cells to [bold]{path}[/]"
                  " (clip.mp4 + clip.json, field.png + field.json)")  # fmt: skip


@data_app.command("real-pan")
def real_pan(
    fields: Path = typer.Option(
        ..., "--fields", help="Real smear fields: heads.csv + images/ (../shared/data/smears)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to create: clip.mp4 + clip.json."),
    count: int = typer.Option(8, "--count", min=1, help="Fields to pan over, one after the other."),
    first: int = typer.Option(0, "--first", min=0, help="Index of the first field (in name order, or in --fold)."),
    fold: int = typer.Option(None, "--fold", min=1, help="Only fields of this fold (`data.smears.field_folds`)."),
    frames_per_field: int = typer.Option(40, "--frames-per-field", min=2),
    width: int = typer.Option(960, "--width"),
    height: int = typer.Option(768, "--height"),
    fps: float = typer.Option(15.0, "--fps"),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Write a camera pan over real smear fields (a window sliding across each), with every head's box per frame."""
    from sperm_edge.data.smear_pan import write_real_pan
    from sperm_edge.data.smears import fields_of_fold, load_smears

    chosen = list(fields_of_fold(load_smears(fields), fold))[first : first + count]
    with _progress(f"panning over {len(chosen)} real fields") as update:
        path = write_real_pan(chosen, out, frames_per_field, (width, height), fps, force=force, progress=update)
    console.print(f"wrote {len(chosen) * frames_per_field} frames ({width}x{height}) over {len(chosen)} real fields "
                  f"to [bold]{path}[/] (clip.mp4 + clip.json)")  # fmt: skip
