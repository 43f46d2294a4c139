"""`sperm-edge run` (classify a microscope stream) and `sperm-edge explain` (Grad-CAM++ on demand)."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sperm_edge.cli._app import app

console = Console()


def _stage_table(stats: dict, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("stage", "mean ms", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, row in stats["stages_ms"].items():
        if row["n"]:
            table.add_row(stage, *(f"{row[k]:.2f}" for k in ("mean", "p50", "p95")))
    return table


@contextmanager
def _stop_on_sigterm(pipeline) -> Iterator[None]:
    """SIGTERM (systemd stop, docker stop) ends capture; the frames already read are finished and reported."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        console.print("[yellow]SIGTERM:[/] finishing the frames already read, then writing the report")
        pipeline.stop()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def run(
    ctx: typer.Context,
    bundle: Path = typer.Argument(..., help="Bundle folder written by `sperm-edge export`."),
    source: str = typer.Option(
        ..., help="Camera index, /dev/videoN, csi://N, rtsp://..., video, image, folder or glob."
    ),
    backend: str = typer.Option(
        "auto", help="auto, ort-cpu, ort-cuda, ort-trt, trt, torch, or triton://HOST:PORT/MODEL (a Triton server)."
    ),
    precision: str = typer.Option(None, help="fp32, fp16 (TensorRT), int8 (default: what auto measured fastest)."),
    mode: str = typer.Option(
        "field", help="field: find the cells in each frame; crop: each frame is one centred cell."
    ),
    out: Path = typer.Option(Path("runs/stream"), help="Output folder (events, flagged cells, report)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    headless: bool = typer.Option(False, "--headless", help="No window, even where a GUI is available."),
    explain: str = typer.Option(
        "none",
        help="flagged: Grad-CAM++ of each flagged cell from the engine's own output; "
        "every: also keep every cell's heatmap for live views; none.",
    ),
    save_video: bool = typer.Option(False, "--save-video", help="Write OUT/annotated.mp4."),
    width: int = typer.Option(None, help="Requested frame width."),
    height: int = typer.Option(None, help="Requested frame height."),
    fps: float = typer.Option(None, help="Requested frame rate (files: replay at this rate)."),
    latest_only: bool = typer.Option(
        None,
        "--latest-only/--every-frame",
        help="Keep only the newest frame (default for live sources) or every frame.",
    ),
    track: bool = typer.Option(
        None,
        "--track/--no-track",
        help="Count each cell once across frames (default: on for videos and cameras, off for images).",
    ),
    threads: int = typer.Option(None, min=1, help="Inference threads (ONNX Runtime intra-op; default: all cores)."),
    tta: bool = typer.Option(
        False, "--tta/--no-tta", help="Classify each cell in its 8 rotations and mirror images (8x the inference)."
    ),
    rolling_views: bool = typer.Option(
        True,
        "--rolling-views/--no-rolling-views",
        help="Field mode: each frame's crops in the next of their 8 rotations and mirror images, so each cell's "
        "class is averaged over orientations across its frames at no extra cost (off with --tta).",
    ),
    batch: int = typer.Option(32, min=1, help="Largest batch of crops per network call."),
    every_frame_inference: bool = typer.Option(
        False,
        "--every-frame-inference",
        help="Field mode: classify every cell in every frame it is seen, instead of a tracked cell only until its "
        "class is settled (for comparison; several times the inference).",
    ),
    crop_scale: float = typer.Option(
        None, help="Crop side / head width (default: as measured on the training crops at export, else 4.6)."
    ),
    crop_size: int = typer.Option(None, help="Fixed crop side in pixels (overrides --crop-scale)."),
    isolate: bool = typer.Option(
        True, "--isolate/--no-isolate", help="Field mode: paint the other heads out of each cell's crop."
    ),
    set_aside: bool = typer.Option(
        True,
        "--set-aside/--count-all",
        help="Field mode: set aside, uncounted and flagged for review, what the bundle's head verifier says is "
        "not a head, or (a bundle without a verifier) the objects unlike every validation cell of the training "
        "data (drift score above the highest of the bundle's validation cells).",
    ),
    min_confidence: float = typer.Option(0.6, help="Flag cells whose top probability is below this."),
    min_stability: float = typer.Option(
        0.7, help="Flag cells whose frames agree with their class less often than this."
    ),
    max_frames: int = typer.Option(None, min=1, help="Stop after this many frames."),
    loop: bool = typer.Option(False, "--loop", help="Replay a video, folder or glob from the start when it ends."),
    stall_timeout: float = typer.Option(
        5.0, min=0.1, help="Reopen a live source that delivers no frame for this many seconds."
    ),
    reconnect_attempts: int = typer.Option(
        5, min=0, help="Reopen a live source this many times in a row before the run fails (0: forever, for services)."
    ),
    reconnect_interval: float = typer.Option(
        0.5, min=0.01, help="Seconds before the first reopen attempt (doubling up to 8 s)."
    ),
    explain_threads: int = typer.Option(
        1, min=1, help="PyTorch threads of the explanation worker (only for models without a cam output)."
    ),
    truth: Path = typer.Option(
        None, help="Ground truth of a synthetic clip (its .json): score recall and double counts."
    ),
    sample_id: str = typer.Option(None, help="The sample's id, recorded in the run header and the report."),
    operator: str = typer.Option(None, help="Who ran it, recorded in the run header and the report."),
    view: str = typer.Option(
        None, help="Serve the live view page at [HOST:]PORT (host 127.0.0.1 unless given; e.g. 8050)."
    ),
    token: str = typer.Option(
        None,
        help="Token the live view requires off loopback (auto: generate one; else prefer --token-file or "
        "SPERM_EDGE_TOKEN: a command line shows in ps).",
    ),
    token_file: Path = typer.Option(None, help="File holding the live view's token (e.g. a 0600 file of the service)."),
    view_fps: float = typer.Option(10.0, min=0.1, help="Most frames per second the live view's stream sends."),
    view_linger: float = typer.Option(5.0, min=0.0, help="Seconds the live view stays up after the report."),
) -> None:
    """Classify the cells of a microscope stream; write events, flagged cells, explanations and a report."""
    from sperm_edge.bundle import load_bundle
    from sperm_edge.io import prepare_output_dir
    from sperm_edge.runtime.annotate import gui_available
    from sperm_edge.runtime.budget import InferenceBudget
    from sperm_edge.runtime.session import SessionOptions, open_session
    from sperm_edge.runtime.sources import SourceOptions

    binding = _view_binding(view, token, token_file)
    options = SessionOptions(
        backend=backend, precision=precision, threads=threads, mode=mode, track=track, tta=tta,
        rolling_views=rolling_views, batch=batch, crop_scale=crop_scale, crop_size=crop_size, isolate=isolate,
        set_aside=set_aside, budget=InferenceBudget("every_frame" if every_frame_inference else "budget"),
        min_confidence=min_confidence, min_stability=min_stability, max_frames=max_frames, explain=explain,
        explain_on_demand=explain == "none" and binding is not None,  # the view explains the cells clicked
        explain_threads=explain_threads, save_video=save_video, window=not headless and gui_available(),
        truth=json.loads(truth.read_text()) if truth else None, sample_id=sample_id, operator=operator,
        source=SourceOptions(
            width=width, height=height, fps=fps, latest_only=latest_only, loop=loop, stall_timeout=stall_timeout,
            reopen_attempts=reconnect_attempts or -1, backoff=reconnect_interval,
        ),
    )  # fmt: skip
    options.check()
    loaded = load_bundle(bundle)
    prepare_output_dir(out, force)
    from sperm_edge.explain.scores import heatmap_trust

    info = {"source": source, "mode": mode, "heatmaps": heatmap_trust(loaded.manifest.get("explain") or {})}
    page = _start_view(ctx, binding, view_fps, out, loaded, info)
    with open_session(loaded, source, out, options) as session:
        if page is not None:
            page.attach(session.pipeline, session.outputs, backend=session.engine.describe())
        console.print(
            f"[bold]{session.engine.name}[/] {session.engine.precision} on {source} ({mode} mode)"
            + (", window: press q to stop" if options.window else "")
        )
        pipeline, outs = session.pipeline, session.outputs
        with Live(console=console, refresh_per_second=2, transient=True) as live, _stop_on_sigterm(pipeline):

            def show(result) -> None:
                if page is not None:
                    page.update(result)
                if pipeline.frames % 10 == 0:
                    ms = {k: v["p50"] or 0.0 for k, v in pipeline.times.summary().items()}
                    live.update(
                        f"frames {pipeline.frames}  cells counted {outs.count}  flagged {outs.flags.count}  "
                        f"[bold]{pipeline.recent_fps:.1f} FPS[/]  (ms: find {ms['localisation']:.1f}, "
                        f"prep {ms['preprocessing']:.1f}, network {ms['network']:.1f})"
                    )

            session.run(show)
        if session.worker is not None and session.worker.pending:
            console.print(f"finishing {session.worker.pending} queued explanations...")
    _print_summary(session.report, session.stats, out)
    if page is not None:
        page.done(session.report)
        _linger(view_linger, out)


def _view_binding(view: str | None, token: str | None, token_file: Path | None) -> tuple | None:
    """(host, port, token, generated) of the live view, checked before anything starts; None without --view."""
    from sperm_edge.errors import SpermEdgeError

    if view is None:
        if token is not None or token_file is not None:
            raise SpermEdgeError("--token and --token-file go with --view [HOST:]PORT")
        return None
    from sperm_edge.view import parse_bind, resolve_token  # the view's package is imported only when asked for

    host, port = parse_bind(view)
    return host, port, resolve_token(host, token, token_file), token == "auto" and token_file is None


def _start_view(ctx: typer.Context, binding, fps: float, out: Path, loaded, info: dict):
    """Start the live view at `binding` (host, port, token); it stops when the command ends."""
    if binding is None:
        return None
    from sperm_edge.view import LiveView, announce

    host, port, token, generated = binding
    page = LiveView(out, loaded.card.classes, loaded.card.normal_class, host, port, token, fps, info)
    page.__enter__()
    ctx.call_on_close(page.__exit__)
    console.print(f"live view: [bold]{announce(page.url, token, generated, out)}[/]", soft_wrap=True, highlight=False)
    return page


def _linger(seconds: float, out: Path) -> None:
    """Keep the finished run's page up a little, so open pages show the final report."""
    import time

    if seconds > 0:
        console.print(f"the live view stays up {seconds:g} s (Ctrl-C closes it); later: sperm-edge view {out}")
        try:
            time.sleep(seconds)
        except KeyboardInterrupt:
            pass


def _print_summary(report: dict, stats: dict, out: Path) -> None:
    console.print(_stage_table(stats, f"{stats['frames']} frames, {stats['fps']:.1f} FPS"))
    line = f"{report['cells']} cells counted, {report['flagged']} flagged"
    if report.get("set_aside"):
        line += f", {report['set_aside']['cells']} set aside as unlike the training cells (set_aside.jsonl)"
    if report.get("percent_normal") is not None:
        lo, hi = report["ci95"]
        line += f"; normal forms [bold]{report['percent_normal']:.1f}%[/] (95% CI {lo:.1f}-{hi:.1f})"
    console.print(line)
    if report.get("warning"):
        console.print(f"[yellow]warning:[/] {report['warning']}")
    _print_drift(report.get("drift"))
    if report.get("truth"):
        t = report["truth"]
        console.print(
            f"ground truth: recall {t['recall']:.3f} ({t['counted']}/{t['cells']}), "
            f"double counts {t['double_counts']}, false counts {t['false_counts']}"
        )
    explanations = report.get("explanations")
    if explanations and explanations.get("error"):
        console.print(f"[yellow]explanations:[/] {explanations['error']}")
    console.print(
        f"written: {out}/events.jsonl, report.json, report.md"
        + (", flagged/" if report["flagged"] else "")
        + (", explanations/" if explanations and explanations["explained"] else "")
    )


def _print_drift(drift: dict | None) -> None:
    from sperm_edge.runtime.drift import drift_message

    if drift is not None and drift.get("warning"):
        console.print(f"[bold red]drift warning:[/] {drift_message(drift)}")
    else:
        console.print(f"drift: {drift_message(drift)}")


@app.command("explain")
def explain_cmd(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    image: Path = typer.Option(None, help="Explain this crop."),
    event: int = typer.Option(None, help="Explain this event of a run (its saved crop)."),
    run_dir: Path = typer.Option(Path("runs/stream"), "--run", help="The run folder of --event."),
    score: Path = typer.Option(None, help="Score the heatmaps on a class-folder set (masks from _masks/ if any)."),
    out: Path = typer.Option(None, help="Output folder (default: ./explanations, or RUN/explanations for --event)."),
    target: str = typer.Option(
        None, help="Explain this class instead of the predicted one (--event: instead of the event's class)."
    ),
    torch_path: bool = typer.Option(
        False,
        "--torch/--engine",
        help="--engine (default): from the ONNX model's cam output; --torch: pytorch-grad-cam on the retained "
        "checkpoint (the reference).",
    ),
    limit: int = typer.Option(25, min=1, help="--score: crops per class."),
    threads: int = typer.Option(None, min=1, help="Threads (ONNX Runtime, or PyTorch for --torch)."),
) -> None:
    """Grad-CAM++ of one crop (--image), of a run's flagged cell (--event), or quality scores (--score)."""
    from sperm_edge.bundle import load_bundle
    from sperm_edge.errors import SpermEdgeError
    from sperm_edge.explain.overlay import write_explanation
    from sperm_edge.preprocess import decode_image
    from sperm_edge.runtime.events import EVENTS_FILE, event_view, find_event
    from sperm_edge.runtime.flagging import event_name

    if sum(x is not None for x in (image, event, score)) != 1:
        raise SpermEdgeError("give exactly one of --image PATH, --event ID or --score DATA")
    loaded = load_bundle(bundle)
    if score is not None:
        from sperm_edge.explain.gradcam import require_torch

        require_torch()
        _score(loaded, score, limit, threads, out)
        return
    extra: dict = {}
    if event is not None:
        record = find_event(run_dir / EVENTS_FILE, event)
        if not record.get("crop"):
            raise SpermEdgeError(f"event {event} has no saved crop (only flagged cells keep theirs)")
        crop_path = run_dir / record["crop"]
        name, out = event_name(event), out or run_dir / "explanations"
        extra = {"event": event, "frame": record.get("frame"), "box": record.get("box")}
        view = event_view(record, run_dir / EVENTS_FILE)  # the orientation the stream's network saw the crop in
        target = target or record.get("class")  # the class the stream explained (its sightings' mean)
    else:
        crop_path, name, out, view = image, image.stem, out or Path("explanations"), 0
    rgb = decode_image(crop_path)
    explanation = (
        _torch_explanation(loaded, rgb, target, threads, view)
        if torch_path
        else _engine_explanation(loaded, rgb, target, threads, view)
    )
    png = write_explanation(out, name, rgb, explanation, {"crop": str(crop_path), **extra})
    info = explanation.to_dict()
    console.print(
        f"{info['class']} ({info['score']:.3f}); heat peak at {info['heat']['peak']}, "
        f"{100 * info['heat']['central_share']:.0f}% in the central region; {info['source']}, "
        f"{explanation.latency_ms:.0f} ms"
    )
    console.print(f"written: {png}, {png.with_suffix('.json')}")


def _class_index(classes: list[str], target: str | None) -> int | None:
    from sperm_edge.errors import SpermEdgeError

    if target is not None and target not in classes:
        raise SpermEdgeError(f"unknown class {target!r}; the model's classes: {', '.join(classes)}")
    return None if target is None else classes.index(target)


def _engine_explanation(loaded, rgb, target: str | None, threads: int | None, view: int = 0):
    """The engine's map on ONNX Runtime (CPU), no torch: the bundle's LayerCAM explainer when export chose it,
    else Grad-CAM++ from the FP32 model's `cam` output. `view`: the dihedral view the network sees the crop in
    (`sperm_edge.tta`), its map turned back onto the crop."""
    import time

    import numpy as np

    from sperm_edge.calibration import calibrated_probs
    from sperm_edge.engines import open_backend
    from sperm_edge.errors import SpermEdgeError
    from sperm_edge.explain.engine import engine_explanation
    from sperm_edge.preprocess import preprocess_batch
    from sperm_edge.runtime.session import bundle_explainer
    from sperm_edge.tta import dihedral_view, undo_dihedral_view

    section = loaded.manifest.get("explain") or {}
    if not section.get("engine"):
        why = section.get("reason", "its models have no cam output (exported before it existed)")
        raise SpermEdgeError(f"bundle {loaded.path} cannot explain in the engine: {why}; use --torch")
    index = _class_index(loaded.card.classes, target)
    explainer = bundle_explainer(loaded, threads)
    with open_backend(loaded, "ort-cpu", "fp32", threads) as engine:
        start = time.perf_counter()
        outputs = engine.infer(
            np.ascontiguousarray(dihedral_view(preprocess_batch([rgb], loaded.card.preprocess), view))
        )
    probs = calibrated_probs(outputs.logits, loaded.card.temperature)[0]  # as the runtime reports them
    if explainer is not None:
        explanation = explainer.explain(rgb, probs, loaded.card.classes, index, view)
    else:
        cam = undo_dihedral_view(outputs.cam[0], view)
        size, layer = loaded.card.preprocess.img_size, section.get("layer", "")
        explanation = engine_explanation(rgb, cam, probs, loaded.card.classes, size, layer, index)
    explanation.latency_ms = (time.perf_counter() - start) * 1000.0  # preprocessing, network and maps
    return explanation


def _torch_explanation(loaded, rgb, target: str | None, threads: int | None, view: int = 0):
    """The reference through pytorch-grad-cam on the retained checkpoint, in dihedral view `view`: LayerCAM on the
    explainer's stage when the bundle draws its explainer's maps, else Grad-CAM++."""
    from sperm_edge.explain.gradcam import GradCamExplainer, require_torch
    from sperm_edge.runtime.session import explainer_entry

    require_torch()
    entry = explainer_entry(loaded)
    stage = None if entry is None else int(entry["layer"].rsplit(".", 1)[1])  # "backbone.blocks.N"
    with GradCamExplainer(loaded.checkpoint_stem(), threads=threads, stage=stage) as reference:
        return reference.explain(rgb, target, view)


def _score(loaded, data: Path, limit: int, threads: int | None, out: Path | None) -> None:
    from sperm_edge.explain.scores import score_explanations

    result = score_explanations(loaded.checkpoint_stem(), data, limit=limit, threads=threads)
    table = Table(title=f"Grad-CAM++ on {result['crops']} crops of {data} ({result['layer']})", title_justify="left")
    for column in ("metric", "Grad-CAM++", "random map"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    rows = (
        ("heat in head mask", "heat_in_mask"),
        ("pointing game", "pointing"),
        ("confidence change, image x heatmap", "cam_mult_change"),
        ("confidence change, top 20% heat kept (ROAD)", "road_keep20_change"),
    )
    for label, key in rows:
        ours, rnd = result[key], result[f"{key}_random"]
        if ours["n"]:
            table.add_row(
                label, f"{ours['mean']:.3f} [{ours['ci95'][0]:.3f}, {ours['ci95'][1]:.3f}]", f"{rnd['mean']:.3f}"
            )
    console.print(table)
    if result["with_masks"]:
        console.print(f"head area share of the crop (what a uniform map scores): {result['mask_share']['mean']:.3f}")
    console.print(
        f"accuracy on these crops {result['accuracy']:.3f}; Grad-CAM++ {result['latency_ms']['mean']:.0f} ms per crop"
    )
    if out is not None:
        from sperm_edge.io import atomic_write_json

        atomic_write_json(out / "explain_scores.json", result)
        console.print(f"written: {out / 'explain_scores.json'}")
