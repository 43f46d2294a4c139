"""A background worker that explains cells while the stream keeps going.

Jobs go into a bounded queue; `submit` never blocks (a full queue drops the job and counts it, so
the cell can be explained later with `sperm-edge explain --event ID`). The worker thread opens
the Grad-CAM++ explainer as it starts (with `preload`, `__enter__` waits for it, so importing
torch and loading the model happen before the stream starts, not during it), limits torch to
`threads` threads and lowers its own scheduling priority (Linux), so the stream's threads win the
cores. On exit it finishes the jobs already queued, then releases the explainer's hooks.
Without torch, the worker reports once that explanations are unavailable and classification
carries on.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def lower_thread_priority(nice: int) -> None:
    """Renice the calling thread (Linux: a thread is a task), so the stream's threads win the cores."""
    if nice and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            pass


@dataclass
class ExplainJob:
    """One crop to explain, written as `out_dir/name.png` and `name.json` (with `extra` merged into the JSON)."""

    name: str
    crop: np.ndarray
    extra: dict = field(default_factory=dict)


class ExplainWorker:
    """`with ExplainWorker(stem, out_dir) as worker: worker.submit(ExplainJob(...))`."""

    def __init__(
        self,
        checkpoint_stem: str | Path,
        out_dir: str | Path,
        threads: int | None = 1,  # None: leave PyTorch's process-wide setting alone (beside the torch backend)
        queue_size: int = 64,
        nice: int = 10,
        before_job: Callable[[ExplainJob], None] | None = None,
        preload: bool = True,
    ) -> None:
        self.checkpoint_stem = Path(checkpoint_stem)
        self.out_dir = Path(out_dir)
        self.threads = threads
        self.nice = nice
        self.before_job = before_job  # a hook for tests and progress displays
        self.preload = preload
        self._ready = threading.Event()
        self.done: list[dict] = []
        self.dropped = 0
        self.failed = 0
        self.error: str | None = None
        self._queue: queue.Queue[ExplainJob | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def __enter__(self) -> ExplainWorker:
        """Start the worker; with `preload`, wait until torch and the model are loaded (or found missing),
        so that start-up cost is paid before the stream starts rather than during it."""
        self._thread = threading.Thread(target=self._run, name="explain", daemon=True)
        self._thread.start()
        if self.preload:
            self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the thread and release the explainer."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, job: ExplainJob) -> bool:
        """Queue a job without waiting; False when the queue is full or explanations are unavailable."""
        if self.error is not None or self._thread is None:
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.debug("explain queue full: %s dropped", job.name)
            return False
        return True

    def summary(self) -> dict:
        return {"explained": len(self.done), "dropped": self.dropped, "failed": self.failed, "error": self.error}

    def _run(self) -> None:
        lower_thread_priority(self.nice)
        explainer = None
        try:
            if self.preload:
                explainer = self._open()
        finally:
            self._ready.set()
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                if self.error is not None:
                    continue
                if explainer is None:
                    explainer = self._open()
                    if explainer is None:
                        continue
                if self.before_job is not None:
                    self.before_job(job)
                self._explain(explainer, job)
        finally:
            if explainer is not None:
                explainer.close()

    def _open(self):
        from sperm_edge.explain.gradcam import GradCamExplainer

        try:
            return GradCamExplainer(self.checkpoint_stem, threads=self.threads).__enter__()
        except Exception as err:  # torch missing (SpermEdgeError) or a checkpoint that does not load
            self.error = str(err)
            log.warning("explanations unavailable: %s", err)
            return None

    def _explain(self, explainer, job: ExplainJob) -> None:
        from sperm_edge.explain.overlay import write_explanation

        try:
            explanation = explainer.explain(job.crop)
            png = write_explanation(self.out_dir, job.name, job.crop, explanation, job.extra)
        except Exception as err:  # one bad crop must not end the worker
            self.failed += 1
            log.warning("explaining %s failed: %s", job.name, err)
            return
        self.done.append(
            {
                "name": job.name,
                "png": str(png),
                "class": explanation.target_class,
                "latency_ms": round(explanation.latency_ms, 1),
            }
        )
