"""Writes a bundle folder (the layout and keys are documented in `sperm_edge.bundle`).

The writer works inside a folder that `sperm_edge.io.atomic_dir` later renames into place: files
are registered as they are produced, and `finish()` hashes every registered file and writes
`manifest.json` last, so a bundle with a manifest is always complete.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from sperm_edge.bundle import FORMAT, MANIFEST, SCHEMA_VERSION, describe_file
from sperm_edge.card import ModelCard
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_json

CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"


class BundleWriter:
    """Accumulates a bundle's files and manifest sections in `folder`."""

    def __init__(self, folder: str | Path, meta: dict) -> None:
        self.folder = Path(folder)
        self.manifest: dict = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            **ModelCard.from_record(meta, "checkpoint metadata").to_record(),
            "files": {},
            "models": {},
            "engines": [],
            "benchmarks": [],
        }
        self._files: list[str] = []

    @classmethod
    def from_manifest(cls, folder: str | Path, manifest: dict) -> BundleWriter:
        """A writer over a copy of an existing bundle: its manifest, its files already registered."""
        writer = cls(folder, manifest)
        writer.manifest = manifest
        for name in manifest.get("files", {}):
            writer.add_file(name)
        return writer

    def path(self, name: str) -> Path:
        return self.folder / name

    def add_file(self, name: str) -> Path:
        """Register a file already written in the folder."""
        target = self.path(name)
        if not target.is_file():
            raise SpermEdgeError(f"bundle file {name} was not written")
        if name not in self._files:
            self._files.append(name)
        return target

    def discard_file(self, name: str) -> None:
        """Unregister and delete a file (a model that did not pass its gate)."""
        if name in self._files:
            self._files.remove(name)
        self.path(name).unlink(missing_ok=True)

    def set_model(self, precision: str, file: str, **sections: object) -> dict:
        self.add_file(file)
        entry = {"file": file, **sections}
        self.manifest["models"][precision] = entry
        return entry

    def drop_model(self, precision: str) -> None:
        entry = self.manifest["models"].pop(precision, None)
        if entry:
            self.discard_file(entry["file"])

    def add_engine(self, entry: dict) -> None:
        self.add_file(entry["file"])
        self.manifest["engines"].append(entry)

    def add_benchmark(self, entry: dict) -> None:
        self.manifest["benchmarks"].append(entry)

    def copy_checkpoint(self, stem: str | Path) -> None:
        """Retain the PyTorch checkpoint as checkpoint.safetensors + checkpoint.json (for Grad-CAM++).

        The weights are copied byte for byte, so the JSON's `weights_sha256` still holds;
        its `weights_file` is renamed to match.
        """
        stem = Path(stem)
        shutil.copyfile(stem.with_suffix(".safetensors"), self.path(CHECKPOINT_WEIGHTS))
        meta = json.loads(stem.with_suffix(".json").read_text())
        meta["weights_file"] = CHECKPOINT_WEIGHTS
        atomic_write_json(self.path(CHECKPOINT_META), meta)
        self.add_file(CHECKPOINT_WEIGHTS)
        self.add_file(CHECKPOINT_META)
        self.manifest["checkpoint"] = {"weights": CHECKPOINT_WEIGHTS, "meta": CHECKPOINT_META}

    def finish(self, versions: dict | None = None) -> dict:
        """Hash every registered file and write manifest.json; return the manifest."""
        stray = sorted(p.name for p in self.folder.iterdir() if p.name not in self._files and p.name != MANIFEST)
        if stray:
            raise SpermEdgeError(f"unexpected files in the bundle being written: {', '.join(stray)}")
        self.manifest["files"] = {name: describe_file(self.path(name)) for name in sorted(self._files)}
        self.manifest["versions"] = versions or {}
        self.manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(self.path(MANIFEST), self.manifest)
        return self.manifest
