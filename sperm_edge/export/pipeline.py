"""`export_bundle`: checkpoint -> bundle, chaining the format exporters and their checks.

Order: validate everything the user gave (options, output folder, checkpoint, TensorRT, image
folders) before any work; then, inside a temporary folder renamed into place only on success:
FP32 ONNX (+ checker, smoke run, parity with PyTorch), the drift description (`export.drift`),
INT8 Q/DQ (+ TensorRT rules, accuracy gate), the CPU-only U8S8 variant if it is faster, CPU
latencies, TensorRT engines, the retained checkpoint, and the manifest last.

The INT8 gate decides on the validation split (choices are made on validation data); accuracy on
the test split is measured and reported beside it, never used to decide.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.export import _stages
from sperm_edge.export.bundle_writer import BundleWriter
from sperm_edge.export.images import ImageSet, folder_images, split_images
from sperm_edge.export.options import ExportOptions, ExportResult, Reporter, Silent
from sperm_edge.io import atomic_dir

__all__ = ["ExportOptions", "ExportResult", "export_bundle"]

log = logging.getLogger(__name__)


def _check_output(out: Path, stem: Path, force: bool) -> None:
    if out.exists() and (out.is_file() or any(out.iterdir())) and not force:
        raise SpermEdgeError(f"output {out} already exists; choose another path or pass --force")
    run_dir = stem.parent.resolve()
    target = out.resolve()
    if target == run_dir or target in run_dir.parents:
        raise SpermEdgeError(f"output {out} would replace the folder holding the checkpoint {stem}")


def _labelled(meta: dict, classes: list[str], folder: Path | None, part: str, flag: str) -> ImageSet:
    """Labelled images from `folder` when given, else the `part` of the checkpoint's own split."""
    if folder is not None:
        return folder_images(folder, classes, need_labels=True)
    try:
        return split_images(meta, part, classes)
    except SpermEdgeError as err:
        raise SpermEdgeError(f"{err}; pass {flag} DIR") from err


def _held_out(meta: dict, classes: list[str], options: ExportOptions) -> ImageSet | None:
    """The test images whose accuracy the bundle reports (never used to decide anything)."""
    try:
        return _labelled(meta, classes, options.eval, "test", "--eval")
    except SpermEdgeError as err:
        if options.int8:
            raise SpermEdgeError(f"{err} (INT8 accuracy is reported on a labelled test set)") from err
        log.warning("no held-out set for accuracy figures: %s", err)
        return None


def _gate_images(meta: dict, classes: list[str], options: ExportOptions) -> ImageSet | None:
    """The validation images the INT8 ship-or-refuse gate decides on: choices are made on validation data."""
    if not options.int8:
        return None
    try:
        return _labelled(meta, classes, options.val, "val", "--val")
    except SpermEdgeError as err:
        raise SpermEdgeError(f"{err} (the INT8 accuracy gate decides on labelled validation images)") from err


def _calibration(meta: dict, classes: list[str], options: ExportOptions) -> ImageSet | None:
    if options.calib is not None:
        images = folder_images(options.calib, classes, need_labels=False)
    elif options.int8:
        try:
            images = split_images(meta, "train", classes)
        except SpermEdgeError as err:
            raise SpermEdgeError(f"{err}; INT8 calibration needs real images: pass --calib DIR") from err
    else:
        return None
    return images.sample(options.calib_count, options.seed)


def _explain_crops(
    meta: dict, classes: list[str], options: ExportOptions, gate_set: ImageSet | None
) -> ImageSet | None:
    """Validation crops of the checkpoint's split for the heatmaps' quality figures (the INT8 gate's, already
    decoded, when those are the split's); None when not at hand."""
    if gate_set is not None and options.val is None:
        return gate_set.sample(options.parity_count, options.seed)
    try:
        return split_images(meta, "val", classes).sample(options.parity_count, options.seed)
    except SpermEdgeError as err:
        log.warning("no explanation quality recorded: %s", err)
        return None


def _framing(meta: dict, classes: list[str]) -> dict | None:
    """The training crops' head framing (`export.framing`); None when the training split is not at hand."""
    from sperm_edge.export.framing import measure_framing

    try:
        return measure_framing(split_images(meta, "train", classes), classes)
    except SpermEdgeError as err:
        log.warning("no framing recorded (the runtime will use its default crop scale): %s", err)
        return None


def _noise_images(size: int, count: int = 16) -> ImageSet:
    """Last resort for the parity check when no real image is at hand (said so in the manifest and the log)."""
    log.warning("no real images for the parity check (no split in the checkpoint, no --eval/--calib): using noise")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]
    return ImageSet(source="uniform noise (no real images were available: pass --eval or --calib)", images=images)


def export_bundle(
    checkpoint: str | Path, out: str | Path, options: ExportOptions | None = None, reporter: Reporter | None = None
) -> ExportResult:
    """Turn a checkpoint (run folder, `best`, or .safetensors) into a verified bundle at `out`."""
    from sperm_edge.model import get_entry
    from sperm_edge.model.checkpoint import load_checkpoint, package_versions, resolve_checkpoint

    options = options or ExportOptions()
    reporter = reporter or Silent()
    options.validate()
    out = Path(out)
    stem = resolve_checkpoint(checkpoint)
    _check_output(out, stem, options.force)
    target = None
    if options.trt:
        from sperm_edge.export.tensorrt_build import probe_target

        target = probe_target()
    reporter.step("loading checkpoint and images")
    ckpt = load_checkpoint(stem)
    if options.keep_float is None:
        options = replace(options, keep_float=get_entry(ckpt.card.arch).int8_keep_float if options.int8 else ())
    held_out = _held_out(ckpt.meta, ckpt.card.classes, options)
    gate_set = _gate_images(ckpt.meta, ckpt.card.classes, options)
    calib = _calibration(ckpt.meta, ckpt.card.classes, options)
    real = held_out if held_out is not None else calib
    parity_set = (
        real.sample(options.parity_count, options.seed) if real else _noise_images(ckpt.card.preprocess.img_size)
    )
    try:
        model = ckpt.build_model()
    except (RuntimeError, KeyError) as err:
        raise SpermEdgeError(f"checkpoint {stem} does not fit its architecture {ckpt.card.arch}: {err}") from err

    with (
        atomic_dir(out, force=options.force) as folder,
        tempfile.TemporaryDirectory(prefix="sperm-edge-export-") as work,
    ):
        writer = BundleWriter(folder, ckpt.meta)
        writer.manifest["source"] = _stages.source_section(stem, ckpt.meta)
        framing = _framing(ckpt.meta, ckpt.card.classes)
        if framing is not None:
            writer.manifest["framing"] = framing
        stages = _stages.Stages(writer, Path(work), ckpt.card.preprocess, ckpt.card.classes, options, reporter)
        # the INT8 cam verdict ships or refuses a model: it is decided on validation images when there are any
        cam_set = gate_set.sample(options.parity_count, options.seed) if gate_set is not None else parity_set
        stages.fp32(model, parity_set, held_out, cam_set)
        stages.explanations(model, _explain_crops(ckpt.meta, ckpt.card.classes, options, gate_set), ckpt.meta)
        stages.drift(ckpt.meta)
        if options.verifier is not None:
            from sperm_edge.export.verifier import add_verifier

            reporter.step("exporting the head verifier and choosing its threshold on its validation split")
            add_verifier(writer, options.verifier, int8=options.int8)
        if options.int8:
            stages.int8(calib, gate_set, held_out)
        stages.latencies()
        if target is not None:
            stages.engines(target)
        writer.copy_checkpoint(stem)
        versions = package_versions()
        if target is not None:
            versions["tensorrt"] = target.tensorrt
        manifest = writer.finish(versions)
    return ExportResult(path=out, manifest=manifest, gates=stages.gates, rejected=stages.rejected)
