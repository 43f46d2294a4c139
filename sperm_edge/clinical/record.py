"""Everything the clinical report of one run says, gathered once: the report, the run header, the model's identity.

The model is named by what the run header recorded (architecture, precision, the manifest's SHA-256)
and, where the bundle is still at the recorded path with the same manifest, by what its manifest
says about it (validation and test accuracy, calibration error, temperature). A bundle that moved or
changed since the run is said to be so, never silently read in its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sperm_edge.bundle import MANIFEST
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import sha256_file


@dataclass
class ClinicalRecord:
    """One run's report (`report.json`), its header (`report["run"]`) and its model's identity."""

    run_dir: Path
    report: dict
    model: dict
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def header(self) -> dict:
        return self.report.get("run") or {}

    @property
    def sample_id(self) -> str | None:
        return self.header.get("sample_id")

    @property
    def started(self) -> str | None:
        return self.header.get("started")


def load_record(run_dir: str | Path, report: dict | None = None) -> ClinicalRecord:
    """The record of `run_dir`, from `report` (as `sperm-edge report` just rebuilt it) or its report.json."""
    run_dir = Path(run_dir)
    if report is None:
        path = run_dir / "report.json"
        try:
            report = json.loads(path.read_text())
        except FileNotFoundError:
            raise SpermEdgeError(f"{path} not found: `sperm-edge report {run_dir}` rebuilds it from the log") from None
        except (OSError, ValueError) as err:
            raise SpermEdgeError(f"{path} is unreadable ({err}): `sperm-edge report {run_dir}` rebuilds it") from None
    if not isinstance(report.get("run"), dict):
        raise SpermEdgeError(f"the report of {run_dir} has no run header: rebuild it with `sperm-edge report`")
    return ClinicalRecord(run_dir, report, model_identity(report["run"]))


def model_identity(header: dict) -> dict:
    """What names the model: the header's record, and the bundle manifest's figures when it is the same bundle."""
    identity = {k: header.get(k) for k in ("arch", "precision", "backend", "bundle", "bundle_sha256")}
    identity["software"] = header.get("software")
    manifest_path = Path(str(header.get("bundle"))) / MANIFEST
    try:
        same = sha256_file(manifest_path) == header.get("bundle_sha256")
        manifest = json.loads(manifest_path.read_text()) if same else None
    except (OSError, ValueError):
        same, manifest = False, None
    if manifest is None:
        identity["manifest"] = ("not read: the bundle is no longer at its recorded path, or its manifest changed "
                                "since the run (its SHA-256 differs)")  # fmt: skip
        return identity
    identity["manifest"] = "read: the same manifest as at the run (SHA-256 checked)"
    source = manifest.get("source") or {}
    identity["val_metrics"] = source.get("val_metrics")
    identity["test_metrics"] = source.get("test_metrics")
    precision = header.get("precision")
    exported = ((manifest.get("models") or {}).get(precision) or {}).get("accuracy")
    if exported:  # the exported model itself, measured by export on held-out images
        identity["exported_accuracy"] = {k: exported.get(k) for k in ("n", "accuracy", "macro_f1", "images")}
    identity["temperature"] = manifest.get("temperature")
    identity["created"] = manifest.get("created")
    return identity
