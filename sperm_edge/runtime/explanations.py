"""Explanations during a run, from the engine's `cam` output (no torch, no worker, no queue).

`--explain flagged`: each flagged cell gets `OUT/explanations/ID.png` (crop | overlay) and
`ID.json` (class, score, heat statistics, `method`, `source: "engine"`) as its event is written.
The map is of the crop the event reports (the track's best sighting), for the event's class: from
the bundle's LayerCAM explainer (`explain.onnx`, one extra pass on the writer thread) when export
chose it, else the `cam` the engine computed for that crop, which travels with it. Turning the
map into files (resize, overlay, PNG encoding, two synced writes: ~5-10 ms) happens on a writer
thread at lowered priority, so the output thread only queues the crop and its small map; the queue
is bounded (a full one makes the output thread wait: nothing is dropped) and drained when the run ends.

`--explain every`: the same files for flagged cells, plus a heatmap of every cell kept in
memory for live views: per track, the latest sighting's thumbnail (`side` px) and its class's
feature-grid map, in a bounded LRU (`capacity` tracks, a few MB at most). `png(track)` renders
the overlay as a small PNG on request, so frames that nobody looks at cost only a resize.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.explain.engine import ExplainerModel, engine_explanation
from sperm_edge.explain.maps import input_map
from sperm_edge.explain.overlay import encode_png, overlay, write_explanation
from sperm_edge.explain.worker import lower_thread_priority
from sperm_edge.runtime.flagging import event_name
from sperm_edge.runtime.pipeline import CellResult

log = logging.getLogger(__name__)

EXPLAIN_MODES = ("none", "flagged", "every")


class TrackHeatmaps:
    """The latest heatmap of each track (bounded): thumbnails and grids in, small overlay PNGs out. Thread-safe."""

    def __init__(self, capacity: int = 512, side: int = 64) -> None:
        self.capacity, self.side = capacity, side
        self._items: OrderedDict[int, tuple[np.ndarray, np.ndarray, str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def update(self, cells: Sequence[CellResult]) -> None:
        """Keep each cell's crop thumbnail and map under its track id (cells without a map are skipped)."""
        for cell in cells:
            if cell.cam is None or cell.crop is None:
                continue
            h, w = cell.crop.shape[:2]
            scale = self.side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            thumb = cv2.resize(cell.crop, size, interpolation=cv2.INTER_LINEAR)  # 0.03 ms a cell
            with self._lock:
                self._items[cell.track] = (thumb, cell.cam, cell.label, cell.confidence)
                self._items.move_to_end(cell.track)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)

    def tracks(self) -> list[int]:
        """Track ids held, oldest first."""
        with self._lock:
            return list(self._items)

    def info(self, track: int) -> dict | None:
        """Class and confidence of the track's latest sighting, or None."""
        with self._lock:
            item = self._items.get(track)
        return None if item is None else {"track": track, "class": item[2], "confidence": round(item[3], 5)}

    def png(self, track: int) -> bytes | None:
        """The overlay of the track's latest sighting as PNG bytes (`side` px), or None when not held."""
        with self._lock:
            item = self._items.get(track)
        if item is None:
            return None
        thumb, grid, _, _ = item
        h, w = thumb.shape[:2]
        side = max(h, w)
        heat = input_map(grid, side)
        top, left = (side - h) // 2, (side - w) // 2
        return encode_png(overlay(thumb, heat[top : top + h, left : left + w]))

    def __len__(self) -> int:
        return len(self._items)


class EngineExplanations:
    """Writes the engine's explanations of flagged cells; with mode `every`, also keeps `heatmaps` of every cell.

    A context manager: entering starts the writer thread, leaving writes what is queued and stops it.
    """

    def __init__(
        self,
        out_dir: str | Path,
        classes: Sequence[str],
        img_size: int,
        layer: str,
        mode: str = "flagged",
        queue_size: int = 512,
        nice: int = 10,
        explainer: ExplainerModel | None = None,
        trust: dict | None = None,
    ) -> None:
        if mode not in EXPLAIN_MODES[1:]:
            raise SpermEdgeError(f"--explain must be one of {', '.join(EXPLAIN_MODES)}, not {mode!r}")
        self.out_dir, self.classes, self.img_size = Path(out_dir), list(classes), img_size
        self.layer, self.mode, self.nice = layer, mode, nice
        self.explainer = explainer  # the bundle's LayerCAM explainer: flagged cells get its map instead of `cam`
        self.trust = trust  # how far the maps can be trusted, measured at export (`explain.scores.heatmap_trust`)
        self.heatmaps = TrackHeatmaps() if mode == "every" else None
        self.explained = self.failed = self.dropped = 0
        self.error: str | None = None  # the last failure, for the report
        self.close_timeout = 10.0  # seconds `__exit__` waits for the queue to be written
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EngineExplanations:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="explanations", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            deadline = time.monotonic() + self.close_timeout
            while self._thread.is_alive() and time.monotonic() < deadline:  # the queue may be full: keep trying
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                left = self._queue.qsize()
                self.dropped += left
                log.warning("explanations: %d still queued after %.0f s, left unwritten", left, self.close_timeout)
            self._thread = None

    def write(self, event: dict, crop: np.ndarray, cam: np.ndarray, probs: np.ndarray) -> dict:
        """Queue `ID.png` and `ID.json` of a flagged event; returns the path to record in the event.

        `crop`, `cam` and `probs` are the reported sighting's (what the network said of that crop);
        the map is for the event's class, which over a track may differ from that crop's top class.
        """
        if self._thread is None:
            raise SpermEdgeError("engine explanations are not open: use them in a `with` block")
        name = event_name(event["id"])
        extra = {"event": event["id"], "frame": event["frame"], "box": event["box"]}
        try:  # never block the stream on a writer that cannot keep up (a slow or full disk)
            job = (name, crop, cam, probs, self.classes.index(event["class"]), int(event.get("view", 0)), extra)
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            return {}
        return {"explanation": f"{self.out_dir.name}/{name}.png"}

    def _run(self) -> None:
        lower_thread_priority(self.nice)
        while (job := self._queue.get()) is not None:
            name, crop, cam, probs, target, view, extra = job
            try:
                if self.explainer is not None:
                    explanation = self.explainer.explain(crop, probs, self.classes, target, view)
                else:
                    explanation = engine_explanation(crop, cam, probs, self.classes, self.img_size, self.layer, target)
                write_explanation(self.out_dir, name, crop, explanation, extra)
            except Exception as err:  # any failure (a bad crop, a full disk) is counted; the writer goes on
                self.failed += 1
                self.error = f"{type(err).__name__}: {err}"
                log.warning("explaining %s failed: %s", name, err)
                continue
            self.explained += 1

    def summary(self) -> dict:
        info = {"source": "engine", "mode": self.mode, "explained": self.explained, "failed": self.failed}
        info["method"] = self.explainer.method if self.explainer is not None else "Grad-CAM++"
        info["layer"] = self.explainer.layer if self.explainer is not None else self.layer
        info.update(dropped=self.dropped, error=self.error)
        if self.heatmaps is not None:
            info["tracks_with_heatmaps"] = len(self.heatmaps)
        if self.trust is not None:
            info["trust"] = self.trust
        return info
