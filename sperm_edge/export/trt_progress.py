"""Progress of a TensorRT engine build (minutes on a Jetson Orin), through TensorRT's `IProgressMonitor`.

TensorRT (10.0 and later) calls a monitor set as `IBuilderConfig.progress_monitor` when an
optimizer phase starts (with its number of steps), after each step, and when the phase ends, from
several internal threads. `BuildProgress` turns those calls into log lines: each top-level
phase as it starts and ends, and the steps of the phase in progress at most every `every`
seconds, with the time since the build began. It holds no TensorRT object, so it is tested
without TensorRT; `attach` wraps it in TensorRT's interface.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class BuildProgress:
    """Phase/step callbacks -> throttled progress lines (`emit`, default: this module's logger)."""

    def __init__(self, label: str, every: float = 5.0, emit: Callable[[str], None] | None = None) -> None:
        self.label = label
        self.every = every
        self.emit = emit or log.info
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = 0.0
        self._phases: dict[str, tuple[str | None, int]] = {}  # phase -> (parent, steps)

    def _say(self, text: str) -> None:
        self._last = time.monotonic()
        self.emit(f"{self.label}: {text} ({self._last - self._start:.0f} s)")

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None:
        with self._lock:
            self._phases[phase] = (parent, steps)
            if parent is None:
                self._say(f"{phase} ({steps} steps)")

    def step_complete(self, phase: str, step: int) -> bool:
        """Report (throttled); True: go on building (False would cancel the build)."""
        with self._lock:
            _parent, steps = self._phases.get(phase, (None, 0))
            if time.monotonic() - self._last >= self.every:
                self._say(f"{phase}: step {step + 1} of {steps}")
        return True

    def phase_finish(self, phase: str) -> None:
        with self._lock:
            parent, _steps = self._phases.pop(phase, (None, 0))
            if parent is None:
                self._say(f"{phase} done")


def attach(trt, config, progress: BuildProgress) -> object | None:
    """Set `progress` as the builder config's monitor; returns the monitor (keep it alive for the build).

    None where this TensorRT has no progress interface (before 10.0)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    monitor = _Monitor()
    config.progress_monitor = monitor
    return monitor
