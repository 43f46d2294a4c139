"""`sperm-edge export`: checkpoint -> bundle (FP32 ONNX, optional INT8 and TensorRT engines)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from sperm_edge.cli._app import app

console = Console()

EXIT_INT8_REFUSED = 3


class StepReporter:
    """A spinner on the running step and a tick with its duration when it ends."""

    def __init__(self) -> None:
        self.status = console.status("")
        self.name: str | None = None
        self.started = 0.0

    def __enter__(self) -> StepReporter:
        self.status.start()
        return self

    def step(self, name: str) -> None:
        self._close()
        self.name, self.started = name, time.perf_counter()
        self.status.update(f"{name} …")

    def _close(self) -> None:
        if self.name:
            console.print(f"[green]✓[/] {self.name} [dim]({time.perf_counter() - self.started:.1f} s)[/]")
            self.name = None

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self._close()
        self.status.stop()


def _keep_float(value: str) -> tuple[str, ...] | None:
    """--keep-float: None for auto (the architecture's default), () for none, else the listed entries."""
    if value.strip().lower() == "auto":
        return None
    if value.strip().lower() == "none":
        return ()
    return tuple(k.strip() for k in value.split(",") if k.strip())


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def print_summary(manifest: dict, rejected: list[dict]) -> None:
    latency = {b["precision"]: b["p50_ms"] for b in manifest.get("benchmarks", [])}
    table = Table(title="bundle models")
    for column in ("precision", "file", "MB", "accuracy", "macro-F1", "top-1 vs fp32", "max |Δlogit|", "p50 ms"):
        table.add_column(column, justify="left" if column in ("precision", "file") else "right")
    for precision, entry in manifest["models"].items():
        acc = entry.get("accuracy", {})
        diff = entry["parity"]["max_abs_logit_diff"] if "parity" in entry else acc.get("max_abs_logit_diff_fp32")
        agreement = entry["parity"]["top1_agreement"] if "parity" in entry else acc.get("top1_agreement_fp32")
        table.add_row(
            precision + (" (CPU only)" if entry.get("cpu_only") else ""),
            entry["file"],
            f"{manifest['files'][entry['file']]['size'] / 1e6:.1f}",
            _pct(acc.get("accuracy")),
            _pct(acc.get("macro_f1")),
            _pct(agreement),
            "—" if diff is None else f"{diff:.2e}",
            "—" if precision not in latency else f"{latency[precision]:.2f}",
        )
    console.print(table)
    for precision, entry in manifest["models"].items():
        search = entry.get("search", {})
        if len(search.get("candidates", [])) > 1:
            chosen = search["candidates"][search["chosen"] - 1]
            console.print(
                f"{precision}: the INT8 search chose candidate {search['chosen']} of {len(search['candidates'])} "
                f"({chosen['calibration']} calibration, {len(chosen['keep_float'])} float patterns; "
                f"validation drop {chosen['drop_points']:.2f} points)"
            )
    for engine in manifest.get("engines", []):
        console.print(f"engine {engine['file']} ({engine['precision']}, batch 1–{engine['max_batch']})")
    for item in rejected:
        console.print(f"[yellow]left out[/] {item['precision']}: {item['reason']}")


@app.command()
def export(
    checkpoint: Path = typer.Argument(
        ..., help="Run folder from `sperm-edge train`, its best.*, or a .safetensors; or a bundle to add engines to."
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Bundle folder to write (must not exist unless --force); a bundle's --triton needs none.",
    ),
    int8: bool = typer.Option(False, "--int8", help="Add an INT8 Q/DQ model (static PTQ with ONNX Runtime)."),
    calib: Path = typer.Option(
        None, help="Calibration images (class folders or loose files); default: training split."
    ),
    calib_count: int = typer.Option(300, min=1, help="Calibrate on at most this many images (random, seeded)."),
    eval_dir: Path = typer.Option(
        None, "--eval", help="Labelled test set the accuracy is reported on; default: the checkpoint's test split."
    ),
    val_dir: Path = typer.Option(
        None, "--val", help="Labelled validation set the INT8 gate decides on; default: the checkpoint's val split."
    ),
    method: str = typer.Option("minmax", help="Calibration method: minmax, entropy or percentile."),
    percentile: float = typer.Option(99.999, help="Percentile for --method percentile."),
    keep_float: str = typer.Option(
        "auto",
        help="Op types, node names or name globs INT8 leaves in float, comma-separated (Sigmoid,Mul or "
        "'*blocks.0/*'); auto: the architecture's default (EfficientNets: stem and first two blocks); "
        "none: quantize all.",
    ),
    max_drop: float = typer.Option(1.0, min=0.0, help="Largest INT8 accuracy drop accepted, in points."),
    allow_drop: bool = typer.Option(
        False, "--allow-drop", help="Ship INT8 (the search's best on validation) even if it drops more than --max-drop."
    ),
    search_budget: float = typer.Option(
        300.0,
        min=0.0,
        help="Seconds the INT8 search may spend per model when the first candidate misses --max-drop: other "
        "calibration methods, per-tensor weights, then the most sensitive layers in float (0: gate the first).",
    ),
    cpu_variant: bool = typer.Option(True, help="Also try the U8S8 INT8 model for ONNX Runtime CPU."),
    trt: bool = typer.Option(False, "--trt", help="Build TensorRT engines here (needs TensorRT and a GPU)."),
    fp16: bool = typer.Option(False, "--fp16", help="With --trt: build an FP16 engine from the FP32 model."),
    max_batch: int = typer.Option(
        16, min=1, help="Largest batch the TensorRT engines accept, and the Triton model's max_batch_size."
    ),
    workspace_mb: int = typer.Option(1024, min=1, help="TensorRT builder workspace limit (MiB)."),
    timing_cache: Path = typer.Option(None, help="TensorRT timing cache file or folder (default ~/.cache/sperm-edge)."),
    parity_tol: float = typer.Option(1e-3, help="Largest |logit difference| allowed between PyTorch and ONNX."),
    seed: int = typer.Option(0, help="Seed for sampling calibration and parity images."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    verifier: Path = typer.Option(
        None, "--verifier", help="A `sperm-edge train-verifier` folder: ship its head verifier in the bundle."
    ),
    triton: Path = typer.Option(
        None, "--triton", help="Also write the bundle as a model of this Triton model repository (REPO/NAME/)."
    ),
    name: str = typer.Option("sperm_edge", "--name", help="With --triton: the model's name in the repository."),
) -> None:
    """Export a checkpoint to a bundle: FP32 ONNX with parity checks, optional INT8 and TensorRT engines.

    Given a bundle instead of a checkpoint (with --trt), copies it to --out with TensorRT engines
    built on this machine: the way to build engines on a Jetson without PyTorch.

    Exit codes: 0 done; 2 bad input (nothing written); 3 INT8 refused by the accuracy gate (the
    bundle was written without it; --allow-drop ships it anyway).
    """
    from sperm_edge.errors import SpermEdgeError
    from sperm_edge.export.engines import add_engines
    from sperm_edge.export.pipeline import ExportOptions, export_bundle

    options = ExportOptions(
        int8=int8,
        calib=calib,
        calib_count=calib_count,
        eval=eval_dir,
        val=val_dir,
        method=method,
        percentile=percentile,
        keep_float=_keep_float(keep_float),
        max_drop=max_drop,
        allow_drop=allow_drop,
        search_budget=search_budget,
        cpu_variant=cpu_variant,
        trt=trt,
        fp16=fp16,
        max_batch=max_batch,
        workspace_mb=workspace_mb,
        timing_cache=timing_cache,
        parity_tolerance=parity_tol,
        seed=seed,
        force=force,
        verifier=verifier,
    )
    from_bundle = (checkpoint / "manifest.json").is_file()
    if from_bundle and (int8 or calib or eval_dir or val_dir or options.keep_float or not (trt or triton)):
        raise SpermEdgeError(
            f"{checkpoint} is a bundle: from a bundle, export only adds TensorRT engines (--trt, --fp16, "
            "--max-batch, --workspace-mb, --timing-cache, --force) or writes it for Triton (--triton, --name); "
            "export INT8 from the checkpoint"
        )
    if from_bundle and not trt:  # the bundle as it is, into a Triton model repository
        _write_triton(checkpoint, triton, name, max_batch)
        return
    if out is None:
        raise SpermEdgeError("--out BUNDLE is needed: the folder the bundle is written to")
    with StepReporter() as reporter:
        if from_bundle:
            result = add_engines(checkpoint, out, options, reporter)
        else:
            result = export_bundle(checkpoint, out, options, reporter)
    print_summary(result.manifest, result.rejected)
    for gate in result.gates:
        if gate.allowed:
            console.print(f"[yellow]shipped anyway (--allow-drop):[/] {gate.message}")
    console.print(f"written: {result.path}/ ({len(result.manifest['files'])} files, manifest.json)")
    if triton:
        _write_triton(result.path, triton, name, max_batch)
    if result.int8_refused:
        gate = next(g for g in result.gates if g.precision == "int8")
        tried = next(r for r in result.rejected if r["precision"] == "int8")["search"]
        console.print(
            f"[bold red]INT8 refused:[/] {gate.message} on the validation split, for the best of "
            f"{len(tried['candidates'])} candidates tried (search {tried['stopped']}; each under `rejected` in "
            "manifest.json). "
            "The bundle holds FP32 only. A larger --search-budget may find one; --keep-float names layers to "
            "keep in float yourself; --allow-drop ships the best candidate."
        )
        raise typer.Exit(EXIT_INT8_REFUSED)


def _write_triton(bundle_path: Path, repo: Path, name: str, max_batch: int) -> None:
    from sperm_edge.bundle import load_bundle
    from sperm_edge.export.triton import TritonOptions, write_model_repository

    options = TritonOptions(name=name, max_batch_size=max_batch)
    folder = write_model_repository(load_bundle(bundle_path), repo, options)
    console.print(f"written: {folder}/ (config.pbtxt, 1/model.onnx; the manifest in {folder.name}/sperm-edge/)")
