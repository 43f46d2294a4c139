"""The head verifier in a bundle: `verifier.onnx` and its threshold, chosen on the verifier's validation split.

`sperm-edge train-verifier` writes a folder with `images/` (head / not_head crops from the real sets,
`data.verifier_set`) and `model/` (an ordinary training run on them). Export turns the run's checkpoint into
FP32 ONNX (the classifier's exporter, `logits` only), scores its validation and test splits on ONNX
Runtime, and keeps as threshold on P(head) the highest one that still passes `MIN_HEAD_RECALL` of the
validation heads: a head wrongly set aside is a cell lost from the count, so the threshold leans towards
keeping. The manifest's `verifier` records the file, threshold, input size, and what it gives on the
validation and test splits (head recall, rejection of not-heads, of SMIDS debris alone, and per kind).

With `export --int8` the verifier is quantized too (ONNX Runtime CPU's U8S8 flavour, where the runtime
runs it, calibrated on its training images) and given its own threshold by the same rule; it ships in
place of the FP32 file only where it keeps its accuracy: at its threshold it rejects no fewer than
`MAX_INT8_REJECTION_DROP` less of the validation not-heads than FP32 does at its own. The manifest's
`verifier.int8` says what was tried and why it shipped or not.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from sperm_edge.data.verifier_set import FIELD_KINDS, HEAD, NEGATIVE_KINDS, SMEAR_KIND, VERIFIER_MODEL
from sperm_edge.engines.ort import new_session
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.bundle_writer import BundleWriter
from sperm_edge.export.images import ImageSet, split_images
from sperm_edge.export.onnx_export import export_onnx
from sperm_edge.export.ort_cpu import ort_logits
from sperm_edge.metrics import softmax
from sperm_edge.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

VERIFIER_FILE, VERIFIER_INT8_FILE = "verifier.onnx", "verifier.int8_cpu.onnx"
MIN_HEAD_RECALL = 0.99
MAX_INT8_REJECTION_DROP = 0.01  # validation not-heads INT8 may let through beyond FP32's, each at its threshold
CALIBRATION_IMAGES = 256  # training images the INT8 ranges are calibrated on
KINDS = (
    "debris",
    *NEGATIVE_KINDS,
    *FIELD_KINDS,
    SMEAR_KIND,
)  # the not-head kinds, as `data.verifier_set` names its images


def verifier_checkpoint(path: str | Path) -> Path:
    """The checkpoint of the verifier in a `train-verifier` folder (or its run folder); a clear error when it holds
    none, or one that is not a head verifier (checked before any export work)."""
    from sperm_edge.model.checkpoint import resolve_checkpoint

    path = Path(path)
    inner = path / VERIFIER_MODEL
    stem = resolve_checkpoint(inner if inner.is_dir() else path)
    meta = stem.with_suffix(".json")
    try:
        classes = json.loads(meta.read_text()).get("classes") or []
    except (OSError, ValueError) as err:
        raise SpermEdgeError(f"cannot read the verifier's checkpoint metadata {meta}: {err}") from err
    if HEAD not in classes or len(classes) != 2:
        raise SpermEdgeError(f"{stem} is not a head verifier (its classes are {classes}, not head / not_head)")
    return stem


def choose_threshold(head_probs: np.ndarray, is_head: np.ndarray, min_recall: float = MIN_HEAD_RECALL) -> float:
    """The highest threshold on P(head) that keeps at least `min_recall` of the heads (a head scores >= it)."""
    heads = np.sort(head_probs[is_head])
    if not len(heads):
        raise SpermEdgeError("the verifier's validation split holds no head: cannot choose its threshold")
    allowed = int(np.floor((1.0 - min_recall) * len(heads)))  # heads that may fall below the threshold
    return float(heads[allowed])


def _kind(path: str) -> str:
    """The negative kind from a verifier image's name (`smids-debris-12.png`, `hushem-tail-3.png`)."""
    parts = Path(path).stem.split("-")
    return parts[1] if len(parts) > 2 and parts[1] in KINDS else "head"


def _figures(head_probs: np.ndarray, images: ImageSet, head: int, threshold: float) -> dict:
    is_head = np.asarray(images.labels) == head
    kept = head_probs >= threshold
    kinds = np.array([_kind(p) for p in images.paths])
    field_heads = is_head & np.array(["fieldhead" in p for p in images.paths])
    smear_heads = is_head & np.array(["smearhead" in p for p in images.paths])
    figures = {
        "n": len(images),
        "head_recall": round(float(kept[is_head].mean()), 4) if is_head.any() else None,
        "field_head_recall": round(float(kept[field_heads].mean()), 4) if field_heads.any() else None,
        "smear_head_recall": round(float(kept[smear_heads].mean()), 4) if smear_heads.any() else None,
        "not_head_rejection": round(float((~kept[~is_head]).mean()), 4) if (~is_head).any() else None,
    }
    figures["rejection_by_kind"] = {
        kind: round(float((~kept[kinds == kind]).mean()), 4) for kind in KINDS if (kinds == kind).any()
    }  # fmt: skip
    return figures


Scored = dict[str, tuple[np.ndarray, ImageSet]]  # split -> (P(head) of its images, the images)


def _score(path: Path, parts: dict[str, ImageSet], spec: PreprocessSpec, head: int) -> Scored:
    session = new_session(path, name="verifier")
    return {part: (softmax(ort_logits(session, split.images, spec))[:, head], split) for part, split in parts.items()}


def _measure(scored: Scored, head: int) -> tuple[float, dict]:
    """The threshold chosen on the validation split, and the figures it gives on every split."""
    val_probs, val_images = scored["val"]
    threshold = choose_threshold(val_probs, np.asarray(val_images.labels) == head)
    return threshold, {part: _figures(probs, images, head, threshold) for part, (probs, images) in scored.items()}


def _calibration(meta: dict, classes: list[str], seed: int = 0) -> ImageSet:
    """`CALIBRATION_IMAGES` of the verifier's training split, drawn before any is decoded."""
    split = meta.get("split") or {}
    names = list(split.get("train") or [])
    if len(names) > CALIBRATION_IMAGES:
        picked = np.random.default_rng(seed).choice(len(names), CALIBRATION_IMAGES, replace=False)
        names = [names[i] for i in sorted(picked)]
    return split_images({**meta, "split": {**split, "train": names}}, "train", classes)


def _int8(writer: BundleWriter, ckpt, parts: dict[str, ImageSet], fp32: tuple[float, dict]) -> dict:
    """Quantize the verifier, choose its threshold, and ship it in place of FP32 where it keeps its accuracy."""
    from sperm_edge.export.int8 import prepare_for_quantization, quantize_int8

    classes, spec = ckpt.card.classes, ckpt.card.preprocess
    head = classes.index(HEAD)
    calib = _calibration(ckpt.meta, classes)
    with tempfile.TemporaryDirectory(prefix="sperm-edge-verifier-") as work:
        prepared = prepare_for_quantization(writer.path(VERIFIER_FILE), Path(work) / "verifier.pre.onnx")
        result = quantize_int8(prepared, writer.path(VERIFIER_INT8_FILE), calib.images, spec, variant="int8_cpu")
    threshold, figures = _measure(_score(result.path, parts, spec, head), head)
    floor = fp32[1]["val"]["not_head_rejection"] - MAX_INT8_REJECTION_DROP
    kept = figures["val"]["not_head_rejection"] >= floor
    if not kept:
        writer.discard_file(VERIFIER_INT8_FILE)
    return {
        "file": VERIFIER_INT8_FILE,
        "shipped": kept,
        "rule": f"ships when its validation not-head rejection is >= FP32's less {MAX_INT8_REJECTION_DROP}, "
        "each at its own threshold",
        "quantization": result.describe(),
        "threshold": round(threshold, 6),
        **figures,
    }


def add_verifier(writer: BundleWriter, folder: str | Path, int8: bool = False) -> dict:
    """Export the verifier of a `train-verifier` folder into the bundle and record it under `verifier` (with
    `int8`, its INT8 model too, shipped where it keeps its accuracy)."""
    from sperm_edge.model.checkpoint import load_checkpoint

    stem = verifier_checkpoint(folder)
    ckpt = load_checkpoint(stem)
    classes = ckpt.card.classes
    spec, head = ckpt.card.preprocess, classes.index(HEAD)
    path = writer.path(VERIFIER_FILE)
    export_onnx(ckpt.build_model(), spec.img_size, path, metadata={"classes": classes})
    parts = {part: split_images(ckpt.meta, part, classes) for part in ("val", "test")}
    fp32 = _measure(_score(path, parts, spec, head), head)
    threshold, figures = fp32
    section = {"file": VERIFIER_FILE, "precision": "fp32"}
    if int8:
        quantized = _int8(writer, ckpt, parts, fp32)
        if quantized["shipped"]:
            writer.discard_file(VERIFIER_FILE)
            section = {"file": VERIFIER_INT8_FILE, "precision": "int8"}
            threshold, figures = quantized["threshold"], {part: quantized[part] for part in parts}
            quantized["fp32"] = {"threshold": round(fp32[0], 6), **fp32[1]}
        section["int8"] = quantized
    writer.add_file(section["file"])
    section.update({
        "classes": classes,
        "head_class": HEAD,
        "input_size": spec.img_size,
        "preprocess": spec.to_dict(),
        "threshold": round(threshold, 6),
        "threshold_rule": f"the highest P(head) keeping >= {MIN_HEAD_RECALL} of the validation heads",
        "checkpoint": str(stem.resolve()),
        "weights_sha256": ckpt.meta.get("weights_sha256"),
        **figures,
    })  # fmt: skip
    writer.manifest["verifier"] = section
    log.info("verifier (%s): threshold %.4f; test head recall %s, not-head rejection %s", section["precision"],
             threshold, figures["test"]["head_recall"], figures["test"]["not_head_rejection"])  # fmt: skip
    return section
