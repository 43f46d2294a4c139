"""The one interface every inference engine implements (Polygraphy's runner pattern).

A backend is a context manager: entering allocates (loads the model, creates the session or
engine, reserves buffers), leaving releases. `infer(batch)` checks state and input, calls the
engine's `_infer_impl` and records the latency. It returns named `Outputs`: the logits, and for
models exported with them the Grad-CAM++ maps (`cam`) and pooled features. Heavy modules are imported inside the `_impl`
hooks, so importing a backend never needs its engine installed; `available()` says whether it
can run here and, if not, what to install.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sperm_edge.errors import SpermEdgeError


@dataclass(frozen=True)
class InputSpec:
    """The network input: name, shape with -1 for the dynamic batch axis, dtype, largest batch."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    max_batch: int | None = None


OUTPUTS = ("logits", "cam", "features")


@dataclass(frozen=True)
class Outputs:
    """One inference: logits (N x K); `cam` (N x K x Hf x Wf, Grad-CAM++ closed form, see
    `sperm_edge.model.cam_head`) and `features` (N x C, pooled) are None for a model without them."""

    logits: np.ndarray
    cam: np.ndarray | None = None
    features: np.ndarray | None = None

    @classmethod
    def from_named(cls, named: dict[str, np.ndarray]) -> Outputs:
        """From the engine's outputs by name; a single unnamed output is the logits (models exported before cam)."""
        if "logits" not in named:
            if len(named) != 1:
                raise SpermEdgeError(f"the model's outputs {sorted(named)} have no `logits`")
            return cls(next(iter(named.values())))
        return cls(**{k: v for k, v in named.items() if k in OUTPUTS})


class Backend:
    """Base class of the inference engines. Subclasses set `name` and implement the `_impl` hooks."""

    name = "base"

    def __init__(self, precision: str = "fp32") -> None:
        self.precision = precision
        self.last_latency_ms: float | None = None
        self._active = False
        self._spec: InputSpec | None = None
        self.output_names: tuple[str, ...] = ()  # set on activation

    # -- public ------------------------------------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "") when this engine can run here, else (False, what is missing and how to install it)."""
        return True, ""

    @property
    def is_active(self) -> bool:
        return self._active

    @property
    def has_cam(self) -> bool:
        """Whether `infer` returns Grad-CAM++ maps (known once active)."""
        return "cam" in self.output_names

    @property
    def input_spec(self) -> InputSpec:
        if self._spec is None:
            raise SpermEdgeError(f"backend {self.name} is not active: use it in a `with` block")
        return self._spec

    def __enter__(self) -> Backend:
        if self._active:
            raise SpermEdgeError(f"backend {self.name} is already active")
        self._spec = self._activate_impl()
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            self._active = False
            self._deactivate_impl()

    def infer(self, batch: np.ndarray) -> Outputs:
        """N x C x H x W float32 (preprocessed) -> named outputs (float32 logits N x classes, cam, features)."""
        spec = self.input_spec
        if not self._active:
            raise SpermEdgeError(f"backend {self.name} is not active")
        if batch.ndim != len(spec.shape) or any(e not in (-1, g) for e, g in zip(spec.shape, batch.shape, strict=True)):
            raise SpermEdgeError(f"backend {self.name}: input shape {batch.shape} does not fit {spec.shape}")
        if spec.max_batch is not None and batch.shape[0] > spec.max_batch:
            raise SpermEdgeError(f"backend {self.name}: batch {batch.shape[0]} exceeds its maximum {spec.max_batch}")
        if batch.dtype != np.float32:
            batch = batch.astype(np.float32)
        batch = np.ascontiguousarray(batch)
        start = time.perf_counter()
        outputs = self._infer_impl(batch)
        self.last_latency_ms = (time.perf_counter() - start) * 1000.0
        return outputs

    def describe(self) -> dict:
        """What ran, for reports: name, precision and engine details."""
        return {"backend": self.name, "precision": self.precision}

    # -- hooks -------------------------------------------------------------------------------------
    def _activate_impl(self) -> InputSpec:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        raise NotImplementedError

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        raise NotImplementedError


def missing(package: str, install: str) -> SpermEdgeError:
    """The error for an engine that is not installed."""
    return SpermEdgeError(f"{package} is not installed here; {install}")
