"""The model bundle: the folder that export writes and the runtime and benchmarks read.

Layout (schema 1)::

    BUNDLE/manifest.json            what is below, with the sha256 and size of every file
    BUNDLE/model.onnx               FP32 ONNX, dynamic batch axis
    BUNDLE/model.int8.onnx          optional: INT8 Q/DQ ONNX (signed, symmetric, per-channel weights)
    BUNDLE/explain.onnx             optional: the LayerCAM explainer (inputs `input`, `target`; outputs `logits`,
                                    `cam`), when export chose its maps for explained cells
    BUNDLE/*.engine                 optional: TensorRT engines, one per GPU / TensorRT version / precision
    BUNDLE/checkpoint.safetensors   the retained PyTorch weights (Grad-CAM++)
    BUNDLE/checkpoint.json          their checkpoint metadata

manifest.json keys: `format` ("sperm-edge-bundle"), `schema_version`, `arch`, `classes` (in
output order), `normal_class`, `abnormal_classes`, `preprocess` (PreprocessSpec as a dict),
`temperature` (T of temperature scaling, fitted on the validation split), `files` ({name: {sha256,
size}}), `models` ({precision: {file, ...figures}}, precision in
"fp32", "int8", "int8_cpu"), `engines` (list of {file, precision, tensorrt, compute_capability,
max_batch}), `checkpoint` ({weights, meta}), `benchmarks` (list of measured latencies:
{backend, precision, batch, p50_ms, machine}), `framing` (optional: how the training crops frame a
head, {head_width_px, crop_side_px, crop_scale, ...}; see `export.framing`), `drift` (the drift
warning's description: {file, method, dims, cell_threshold, run_rule, ...}, or {available: false,
reason}; see `sperm_edge.drift`), `explain` (how explained cells get their maps: `engine`, `method` and `layer`
of the models' `cam` output, `maps` ("cam" or "explainer"), `explainer` ({file, method, layer, grid, parity,
ms_per_cell}), `pointing`, `heat_share`, `heat_share_centre_matched` and `quality` measured on validation
crops, `candidates`; see `export.explain_quality`), `versions`, `created`.

BUNDLE/drift.npz (optional) holds the drift model's arrays (read with `allow_pickle=False`).

torch-free on purpose: the classify-only runtime loads bundles with this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sperm_edge.card import ModelCard
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import sha256_file

FORMAT = "sperm-edge-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TRITON_CLIENT = "sperm-edge"  # in a Triton model folder: the client's bundle (`export.triton`)


def describe_file(path: Path) -> dict:
    """The manifest's entry for a file: {sha256, size}."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


@dataclass
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict

    @property
    def card(self) -> ModelCard:
        """Architecture, classes, preprocessing, temperature and crop framing, as the manifest records them."""
        return ModelCard.from_record(self.manifest, f"bundle {self.path}")

    def drift_model(self):
        """The drift warning's model (`sperm_edge.drift.DriftModel`), or None for a bundle without one."""
        from sperm_edge.drift import DriftModel

        section = self.manifest.get("drift") or {}
        if not section.get("file"):
            return None
        return DriftModel.load(self.file(section["file"]))

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise SpermEdgeError(f"bundle {self.path} has no file {name!r}")
        return _inside(self.path, name)

    def precisions(self) -> list[str]:
        return list(self.manifest.get("models", {}))

    def onnx_path(self, precision: str = "fp32") -> Path:
        models = self.manifest.get("models", {})
        if precision not in models:
            raise SpermEdgeError(f"bundle {self.path} has no {precision} model (it has: {', '.join(models) or 'none'})")
        return self.file(models[precision]["file"])

    def checkpoint_stem(self) -> Path:
        """Path stem of the retained PyTorch checkpoint (load with sperm_edge.model.checkpoint)."""
        return self.file(self.manifest["checkpoint"]["weights"]).with_suffix("")


def _inside(folder: Path, name: str) -> Path:
    """FOLDER/NAME, refused when NAME leaves the folder (`..`, an absolute path, a link out): an untrusted
    manifest must not make the runtime read or hash files elsewhere."""
    target = folder / name
    if not isinstance(name, str) or Path(name).is_absolute() or not target.resolve().is_relative_to(folder.resolve()):
        raise SpermEdgeError(f"bundle {folder} lists a file outside itself: {name!r} (tampered manifest?)")
    return target


def _check_classes(path: Path, manifest: dict) -> None:
    """The class list must be names, one per output of the model, as the manifest records them."""
    classes = manifest.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise SpermEdgeError(f"bundle {path}: `classes` must be a non-empty list of names")
    if len(set(classes)) != len(classes):
        raise SpermEdgeError(f"bundle {path}: `classes` names a class twice: {classes}")


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle folder (or a Triton model folder that `export --triton` wrote: its client bundle); with
    `verify`, every listed file must exist with its recorded size and sha256."""
    path = Path(path)
    if (path / "config.pbtxt").is_file() and (path / TRITON_CLIENT / MANIFEST).is_file():
        path = path / TRITON_CLIENT  # the model stays on the server; run it with --backend triton://...
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise SpermEdgeError(f"bundle folder not found: {path}")
    if not manifest_path.is_file():
        raise SpermEdgeError(f"{path} is not a bundle: no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SpermEdgeError(f"bundle manifest {manifest_path} is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SpermEdgeError(f"{manifest_path} is not a sperm-edge bundle manifest")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise SpermEdgeError(
            f"bundle {path} has schema {manifest['schema_version']}; this sperm-edge reads up to {SCHEMA_VERSION}"
        )
    _check_classes(path, manifest)
    for name in manifest.get("files", {}):
        _inside(path, name)
    if verify:
        for name, entry in manifest.get("files", {}).items():
            target = path / name
            if not target.is_file():
                raise SpermEdgeError(f"bundle file missing: {target}")
            if target.stat().st_size != entry["size"]:
                raise SpermEdgeError(
                    f"bundle file {target} has {target.stat().st_size} bytes, expected "
                    f"{entry['size']} (truncated or altered)"
                )
            if sha256_file(target) != entry["sha256"]:
                raise SpermEdgeError(f"bundle file {target} does not match its sha256 (altered or corrupt)")
    return Bundle(path=path, manifest=manifest)
