"""The head verifier in a bundle: `verifier.onnx` and its threshold, chosen on the verifier's validation split.

`sperm-edge train-verifier` writes a folder with `images/` (head / not_head crops from the real sets,
`data.verifier_set`) and `model/` (an ordinary training run on them). Export turns the run's checkpoint into
FP32 ONNX (the classifier's exporter, `logits` only), scores its validation and test splits on ONNX
Runtime, and keeps as threshold on P(head) the highest one that still passes `MIN_HEAD_RECALL` of the
validation heads: a head wrongly set aside is a cell lost from the count, so the threshold leans towards
keeping. The manifest's `verifier` records the file, threshold, input size, and what it gives on the
validation and test splits (head recall, rejection of not-heads, of SMIDS debris alone, and per kind).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from sperm_edge.data.verifier_set import FIELD_KINDS, HEAD, NEGATIVE_KINDS, VERIFIER_MODEL
from sperm_edge.engines.ort import new_session
from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.bundle_writer import BundleWriter
from sperm_edge.export.images import ImageSet, split_images
from sperm_edge.export.onnx_export import export_onnx
from sperm_edge.export.ort_cpu import ort_logits
from sperm_edge.metrics import softmax

log = logging.getLogger(__name__)

VERIFIER_FILE = "verifier.onnx"
MIN_HEAD_RECALL = 0.99
KINDS = ("debris", *NEGATIVE_KINDS, *FIELD_KINDS)  # the not-head kinds, as `data.verifier_set` names its images


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
    figures = {
        "n": len(images),
        "head_recall": round(float(kept[is_head].mean()), 4) if is_head.any() else None,
        "field_head_recall": round(float(kept[field_heads].mean()), 4) if field_heads.any() else None,
        "not_head_rejection": round(float((~kept[~is_head]).mean()), 4) if (~is_head).any() else None,
    }
    figures["rejection_by_kind"] = {
        kind: round(float((~kept[kinds == kind]).mean()), 4) for kind in KINDS if (kinds == kind).any()
    }  # fmt: skip
    return figures


def add_verifier(writer: BundleWriter, folder: str | Path) -> dict:
    """Export the verifier of a `train-verifier` folder into the bundle and record it under `verifier`."""
    from sperm_edge.model.checkpoint import load_checkpoint

    stem = verifier_checkpoint(folder)
    ckpt = load_checkpoint(stem)
    classes = ckpt.card.classes
    spec, head = ckpt.card.preprocess, classes.index(HEAD)
    path = writer.path(VERIFIER_FILE)
    export_onnx(ckpt.build_model(), spec.img_size, path, metadata={"classes": classes})
    writer.add_file(VERIFIER_FILE)
    session = new_session(path, name="verifier")
    scored = {}
    for part in ("val", "test"):
        images = split_images(ckpt.meta, part, classes)
        scored[part] = (softmax(ort_logits(session, images.images, spec))[:, head], images)
    val_probs, val_images = scored["val"]
    threshold = choose_threshold(val_probs, np.asarray(val_images.labels) == head)
    section = {
        "file": VERIFIER_FILE,
        "classes": classes,
        "head_class": HEAD,
        "input_size": spec.img_size,
        "preprocess": spec.to_dict(),
        "threshold": round(threshold, 6),
        "threshold_rule": f"the highest P(head) keeping >= {MIN_HEAD_RECALL} of the validation heads",
        "checkpoint": str(stem.resolve()),
        "weights_sha256": ckpt.meta.get("weights_sha256"),
        **{part: _figures(probs, images, head, threshold) for part, (probs, images) in scored.items()},
    }
    writer.manifest["verifier"] = section
    log.info("verifier: threshold %.4f; test head recall %s, not-head rejection %s", threshold,
             section["test"]["head_recall"], section["test"]["not_head_rejection"])  # fmt: skip
    return section
