"""Checkpoint files: weights in safetensors plus a JSON of everything needed to rebuild and preprocess.

`NAME.safetensors` holds the model's tensors; `NAME.json` holds the architecture, class names in
order, the preprocessing spec, training config, metrics, split and package versions. The JSON
records the weights' sha256, so a truncated or swapped weights file is refused on load.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from sperm_edge.card import ModelCard
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_bytes, atomic_write_json, sha256_file

FORMAT = "sperm-edge-checkpoint"
SCHEMA_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: its metadata and its state dict."""

    meta: dict
    state_dict: dict[str, torch.Tensor]
    weights_path: Path

    @property
    def card(self) -> ModelCard:
        """Architecture, classes, preprocessing and temperature, as the metadata records them."""
        return ModelCard.from_record(self.meta, f"checkpoint {self.weights_path.with_suffix('.json')}")

    def build_model(self) -> torch.nn.Module:
        """The architecture with these weights, in eval mode."""
        from sperm_edge.model import create_model

        model = create_model(self.card.arch, num_classes=len(self.card.classes))
        model.load_state_dict(self.state_dict)
        return model.eval()


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("sperm-edge", "torch", "timm", "numpy", "opencv-python-headless", "onnx", "onnxruntime"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


#: what `save_checkpoint` writes itself: left out of the `meta` it is given (a loaded checkpoint's meta may be
#: saved again under new weights, and must not carry the old weights' hash or versions)
OWN_KEYS = ("format", "schema_version", "weights_file", "weights_sha256", "versions")


def save_checkpoint(path_stem: str | Path, model: torch.nn.Module, meta: dict) -> None:
    """Write `STEM.safetensors` then `STEM.json`, each atomically; the JSON names the weights' hash."""
    stem = Path(path_stem)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = stem.with_suffix(".safetensors")
    atomic_write_bytes(weights, save(state))
    full = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        **{k: v for k, v in meta.items() if k not in OWN_KEYS},
        "weights_file": weights.name,
        "weights_sha256": sha256_file(weights),
        "versions": package_versions(),
    }
    atomic_write_json(stem.with_suffix(".json"), full)


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder (uses best.*), a `.safetensors`, a `.json` or a bare stem; return the stem."""
    path = Path(path)
    if path.is_dir():
        path = path / "best"
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    for suffix in (".safetensors", ".json"):
        if not stem.with_suffix(suffix).is_file():
            raise SpermEdgeError(f"checkpoint file not found: {stem.with_suffix(suffix)}")
    return stem


def read_meta(path: str | Path) -> dict:
    stem = resolve_checkpoint(path)
    meta_path = stem.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SpermEdgeError(f"checkpoint metadata {meta_path} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SpermEdgeError(f"{meta_path} is not a sperm-edge checkpoint")
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise SpermEdgeError(
            f"{meta_path} has schema {meta['schema_version']}; this sperm-edge reads up to {SCHEMA_VERSION}"
        )
    return meta


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint: metadata format, weights hash, then the tensors."""
    stem = resolve_checkpoint(path)
    meta = read_meta(stem)
    weights = stem.with_suffix(".safetensors")
    if sha256_file(weights) != meta.get("weights_sha256"):
        raise SpermEdgeError(f"checkpoint weights {weights} do not match their recorded sha256 (truncated or altered)")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise SpermEdgeError(f"cannot read checkpoint weights {weights}: {err}") from err
    return Checkpoint(meta=meta, state_dict=state, weights_path=weights)
