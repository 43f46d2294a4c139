"""What export is told and what it returns: shared by the pipeline, its stages and the engine builder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.gate import DEFAULT_MAX_DROP, DropGate
from sperm_edge.export.parity import DEFAULT_TOLERANCE

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def step(self, name: str) -> None: ...


class Silent:
    """A reporter that only logs."""

    def step(self, name: str) -> None:
        log.info("%s", name)


@dataclass
class ExportOptions:
    """Everything `sperm-edge export` can be told."""

    int8: bool = False
    calib: Path | None = None
    calib_count: int = 300
    eval: Path | None = None  # labelled test images for the reported accuracy (default: the checkpoint's test split)
    val: Path | None = None  # labelled validation images the INT8 gate decides on (default: the val split)
    method: str = "minmax"
    percentile: float = 99.999
    keep_float: tuple[str, ...] | None = None  # None: the architecture's default (ModelEntry.int8_keep_float)
    max_drop: float = DEFAULT_MAX_DROP
    allow_drop: bool = False
    search_budget: float = 300.0  # seconds the INT8 search may spend per variant after the first candidate
    cpu_variant: bool = True
    trt: bool = False
    fp16: bool = False
    max_batch: int = 16
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    parity_tolerance: float = DEFAULT_TOLERANCE
    parity_count: int = 64
    latency_runs: int = 20
    force: bool = False
    seed: int = 0
    verifier: Path | None = None  # a `sperm-edge train-verifier` folder: its head verifier ships in the bundle

    def validate(self) -> None:
        if self.fp16 and not self.trt:
            raise SpermEdgeError("--fp16 builds a TensorRT engine; add --trt")
        if self.calib_count < 1 or self.parity_count < 1 or self.latency_runs < 1:
            raise SpermEdgeError("--calib-count, parity count and latency runs must be at least 1")
        if self.max_drop < 0:
            raise SpermEdgeError(f"--max-drop must be 0 or more points, not {self.max_drop}")
        if self.search_budget < 0:
            raise SpermEdgeError(f"--search-budget must be 0 or more seconds, not {self.search_budget}")
        if self.max_batch < 1 or self.workspace_mb < 1:
            raise SpermEdgeError("--max-batch and --workspace-mb must be at least 1")
        if self.keep_float and not self.int8:
            raise SpermEdgeError("--keep-float applies to INT8 quantization; add --int8")
        if self.int8:
            from sperm_edge.export.int8 import Int8Config

            Int8Config(method=self.method, percentile=self.percentile)  # refuses unknown methods now
        if self.verifier is not None:
            from sperm_edge.export.verifier import verifier_checkpoint

            verifier_checkpoint(self.verifier)  # a missing folder or a model of another kind fails before any work


@dataclass
class ExportResult:
    """The bundle written and the verdicts of the gates."""

    path: Path
    manifest: dict
    gates: list[DropGate] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    @property
    def int8_refused(self) -> bool:
        """INT8 was asked for but left out because it lost too much accuracy (and --allow-drop was not given)."""
        return any(g.precision == "int8" and not g.passed and not g.allowed for g in self.gates)
