"""TensorRT engines into a bundle: during a full export, or added later to an existing bundle on the target.

The second path is how a Jetson gets its engines: copy the bundle there and run
`sperm-edge export BUNDLE --out BUNDLE_TRT --trt`. It needs TensorRT only, not PyTorch: the
engines are built from the bundle's own ONNX models, and the new bundle is written whole to a
temporary folder and renamed, like every bundle.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from pathlib import Path

from sperm_edge.bundle import load_bundle
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.bundle_writer import BundleWriter
from sperm_edge.export.options import ExportResult
from sperm_edge.export.tensorrt_build import (
    Target,
    build_engine,
    convert_to_fp16,
    needs_fp16_onnx,
    probe_target,
    timing_cache_name,
)
from sperm_edge.io import atomic_dir, cache_dir

log = logging.getLogger(__name__)


def engine_precisions(models: dict, int8: bool, fp16: bool) -> list[str]:
    """INT8 from the Q/DQ model when asked and present, FP16 when asked, else FP32."""
    wanted = (["int8"] if int8 and "int8" in models else []) + (["fp16"] if fp16 else [])
    if int8 and "int8" not in models:
        log.warning("no INT8 engine: the bundle has no INT8 model")
    return wanted if (int8 or fp16) else ["fp32"]


def timing_cache_path(target: Target, given: Path | None) -> Path:
    """A cache file named by TensorRT version and GPU, in `given` (a folder) or the persisted cache folder
    (`$SPERM_EDGE_CACHE/tensorrt`, else ~/.cache/sperm-edge/tensorrt)."""
    if given is not None and given.suffix == ".cache":
        path = given
    else:
        path = (given or cache_dir("tensorrt")) / timing_cache_name(target.tensorrt, target.compute_capability)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def build_engines(writer: BundleWriter, work: Path, target: Target, precisions: list[str], options, reporter) -> None:
    """Build each precision's engine from the bundle's ONNX models and register it with `writer`."""
    models = writer.manifest["models"]
    cache = timing_cache_path(target, options.timing_cache)
    for precision in precisions:
        source = writer.path(models["int8" if precision == "int8" else "fp32"]["file"])
        if needs_fp16_onnx(target.major, precision):
            source = convert_to_fp16(source, work / "model.fp16.onnx")
        reporter.step(f"building the TensorRT {precision} engine (TensorRT {target.tensorrt})")
        built = build_engine(
            source,
            writer.folder,
            precision,
            target,
            options.max_batch,
            workspace_mb=options.workspace_mb,
            timing_cache=cache,
        )
        writer.manifest["engines"] = [e for e in writer.manifest["engines"] if e["file"] != built.file]
        writer.add_engine(built.describe())
    writer.manifest.setdefault("versions", {})["tensorrt"] = target.tensorrt


def add_engines(bundle_path: str | Path, out: str | Path, options, reporter) -> ExportResult:
    """Copy a verified bundle to `out` with TensorRT engines built here."""
    bundle = load_bundle(bundle_path)
    out = Path(out)
    if out.resolve() == bundle.path.resolve():
        raise SpermEdgeError(f"write the bundle with engines to a new folder, not over {bundle.path}")
    if out.exists() and (out.is_file() or any(out.iterdir())) and not options.force:
        raise SpermEdgeError(f"output {out} already exists; choose another path or pass --force")
    target = probe_target()
    precisions = engine_precisions(bundle.manifest.get("models", {}), "int8" in bundle.precisions(), options.fp16)
    with atomic_dir(out, force=options.force) as folder, tempfile.TemporaryDirectory(prefix="sperm-edge-trt-") as work:
        manifest = copy.deepcopy(bundle.manifest)
        for name in manifest["files"]:
            shutil.copyfile(bundle.path / name, Path(folder) / name)
        writer = BundleWriter.from_manifest(folder, manifest)
        build_engines(writer, Path(work), target, precisions, options, reporter)
        manifest = writer.finish(writer.manifest.get("versions"))
    return ExportResult(path=out, manifest=manifest)
