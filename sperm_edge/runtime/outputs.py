"""Everything a run leaves behind, written on the output thread as results arrive.

OUT/events.jsonl            one line per counted cell (see `events`)
OUT/set_aside.jsonl         cells not counted (`counted` False), with their `reason`: `not_a_head` (the bundle's
                            head verifier, `runtime.verifier`), `unlike_training` (see
                            `PipelineConfig.set_aside_above`: flagged for review) or `paused` (their tracks
                            ended while counting was paused); only when any
OUT/flagged/ID.png|.frame.jpg|.json   flagged cells (see `flagging`)
OUT/explanations/ID.png|.json         Grad-CAM++ of flagged cells (`--explain flagged|every`, or one asked
                                      for by `explain_event`, e.g. a click in the live view): from the
                                      engine's `cam` output (`explanations`), or for a model without one
                                      from the retained checkpoint in a background worker
OUT/annotated.mp4           when asked: frames with boxes, labels, confidence and FPS
OUT/report.json, report.md  at the end (see `report`)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

from sperm_edge.explain.worker import ExplainJob, ExplainWorker
from sperm_edge.preprocess import decode_image
from sperm_edge.runtime.annotate import VideoFileOutput, Window, draw
from sperm_edge.runtime.events import EVENTS_FILE, SET_ASIDE_FILE, EventLog, read_events
from sperm_edge.runtime.explanations import EngineExplanations
from sperm_edge.runtime.flagging import FlagStore, event_name
from sperm_edge.runtime.pipeline import CellEvent, FrameResult
from sperm_edge.runtime.report import build_report, write_report
from sperm_edge.runtime.verifier import NOT_A_HEAD

log = logging.getLogger(__name__)

EXPLANATIONS_DIR = "explanations"


class RunOutputs:
    """Writes events, flagged cells, explanations, the annotated video and the window; then the report.

    `explanations` writes the engine's maps of flagged cells at once (and with `--explain every`
    keeps every cell's in `explanations.heatmaps`); `explainer`, the PyTorch worker, is the
    fallback for a model without a `cam` output. With `explain_flagged` False they explain only
    the cells `explain_event` asks for. While `paused` (set from another thread, e.g. the live
    view), the cells whose tracks end are not counted: they go to set_aside.jsonl with reason `paused`
    and are tallied in `uncounted`; `written` holds the events the last `write` logged. `header`: the
    run header, the first line of events.jsonl.
    """

    def __init__(
        self,
        out_dir: str | Path,
        explainer: ExplainWorker | None = None,
        video: str | Path | None = None,
        video_fps: float = 15.0,
        window: bool = False,
        flag_capacity: int = 128,
        explanations: EngineExplanations | None = None,
        explain_flagged: bool = True,
        keep_flagged: int = 4096,
        header: dict | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.explainer = explainer
        self.explanations = explanations
        self.explain_flagged = explain_flagged
        self.paused = False
        self.uncounted = 0
        self.written: list[dict] = []
        # the newest flagged cells' network outputs, for `explain_event` (crops are on disk)
        self._flagged: OrderedDict[int, CellEvent] = OrderedDict()
        self._keep_flagged = keep_flagged
        self._requested: set[int] = set()
        self._open = False
        self.flags = FlagStore(self.out_dir, flag_capacity)
        self.submitted = 0
        self.quit_requested = False
        self._log = EventLog(self.out_dir / EVENTS_FILE, header=header)
        self._set_aside = EventLog(self.out_dir / SET_ASIDE_FILE)  # opened on the first cell set aside
        self._video = VideoFileOutput(video, video_fps) if video else None
        self._window = Window() if window else None

    def __enter__(self) -> RunOutputs:
        self._open = True
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._log.__enter__()
        if self.explanations is not None:
            self.explanations.__enter__()
        if self._window is not None:
            self._window.__enter__()
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self._open = False
        if self.explanations is not None:
            self.explanations.__exit__()  # writes the explanations still queued
        self._log.close()
        self._set_aside.close()
        if self._video is not None:
            self._video.close()  # kept even after a failure: what was recorded is evidence too
        if self._window is not None:
            self._window.__exit__()

    def write(self, result: FrameResult) -> None:
        """Log the result's events, keep and explain its flagged cells, draw its frame."""
        paused = self.paused
        if paused:
            self.uncounted += len(result.events)
            for cell in result.events:
                self._write_set_aside({**cell.event, "counted": False, "reason": "paused"})
        self.written = []
        for cell in [] if paused else result.events:
            event = cell.event
            if event["flagged"] and cell.crop is not None:
                event.update(self.flags.add(event, cell.crop, cell.frame))
                self._keep(CellEvent(event, None, None, cell.cam, cell.crop_probs))
                if self.explain_flagged:
                    event.update(self._explain(event, cell.crop, cell.cam, cell.crop_probs))
            if event.get("counted", True):
                self._log.write(event)
                self.written.append(event)
            else:
                reason = NOT_A_HEAD if NOT_A_HEAD in event["flag_reasons"] else "unlike_training"
                self._write_set_aside({**event, "reason": reason})
        if self.explanations is not None and self.explanations.heatmaps is not None:
            self.explanations.heatmaps.update(result.cells)
        if result.frame is not None and (self._video is not None or self._window is not None):
            image = draw(result.frame.image, result.cells, result.fps)
            if self._video is not None:
                self._video.write(image)
            if self._window is not None and not self._window.show(image):
                self.quit_requested = True

    @property
    def count(self) -> int:
        """Events logged so far."""
        return self._log.count

    @property
    def events(self) -> list[dict]:
        """Every event logged so far, read back from events.jsonl: a run of hours is not held in memory."""
        return read_events(self._log.path) if self._log.path.is_file() else []

    @property
    def set_aside(self) -> list[dict]:
        """The cells set aside so far (not counted), read back from set_aside.jsonl."""
        return read_events(self._set_aside.path) if self._set_aside.path.is_file() else []

    def _write_set_aside(self, event: dict) -> None:
        if not self._set_aside.is_open:
            self._set_aside.__enter__()
        self._set_aside.write(event)

    def _keep(self, cell: CellEvent) -> None:
        self._flagged[int(cell.event["id"])] = cell
        while len(self._flagged) > self._keep_flagged:
            self._flagged.popitem(last=False)

    def _explain(self, event: dict, crop, cam, probs) -> dict:
        """Queue a flagged cell's explanation: the engine's map, else a job for the worker; the paths to record."""
        paths: dict = {}
        if self.explanations is not None and cam is not None:
            paths = self.explanations.write(event, crop, cam, probs)
            queued = bool(paths)  # empty when the writer's queue was full and the map was dropped
        elif self.explainer is not None:
            extra = {"event": event["id"], "frame": event["frame"], "box": event["box"]}
            queued = self.explainer.submit(ExplainJob(event_name(event["id"]), crop, extra))
        else:
            queued = False
        if queued:
            self._requested.add(int(event["id"]))
            self.submitted += 1
        return paths

    def explain_event(self, event_id: int) -> str:
        """Ask for the explanation of a flagged cell (from any thread): `ready`, `queued` or `unavailable`.

        KeyError for an id that is not one of the newest `keep_flagged` counted flagged cells.
        """
        cell = self._flagged[int(event_id)]
        if (self.out_dir / EXPLANATIONS_DIR / f"{event_name(event_id)}.png").is_file():
            return "ready"
        if "crop" not in cell.event:  # no image was kept (the disk was nearly full)
            return "unavailable"
        if int(event_id) not in self._requested and self._open:
            self._explain(cell.event, decode_image(self.out_dir / cell.event["crop"]), cell.cam, cell.crop_probs)
        return "queued" if int(event_id) in self._requested else "unavailable"

    def finish(
        self, classes: list[str], normal_class: str | None, run: dict,
        events: list[dict] | None = None, set_aside: list[dict] | None = None,
    ) -> dict:  # fmt: skip
        """Write report.json and report.md (call after the explainer has finished its queue). `events` and
        `set_aside`: the logs as the caller already read them back (read here otherwise)."""
        events = self.events if events is None else events
        set_aside = self.set_aside if set_aside is None else set_aside
        asked = self.explain_flagged or self.submitted
        if self.explanations is not None and asked:
            run = {**run, "explanations": self.explanations.summary()}
        elif self.explainer is not None and asked:
            run = {**run, "explanations": {**self.explainer.summary(), "source": "torch", "submitted": self.submitted}}
        if self.uncounted:
            run = {**run, "uncounted_while_paused": self.uncounted}
        flags = self.flags
        if flags.frames_skipped or flags.images_skipped_low_disk:
            run = {**run, "images": {
                "frames_skipped": flags.frames_skipped, "max_frames": flags.max_frames,
                "skipped_low_disk": flags.images_skipped_low_disk, "min_free_mb": flags.min_free_mb,
            }}  # fmt: skip
        unlike = sum(1 for e in set_aside if e.get("reason", "unlike_training") == "unlike_training")
        not_heads = sum(1 for e in set_aside if e.get("reason") == NOT_A_HEAD)
        if unlike or not_heads:
            summary = {"cells": unlike + not_heads, "unlike_training": unlike, NOT_A_HEAD: not_heads,
                       "file": SET_ASIDE_FILE, "threshold": run.get("set_aside_above")}  # fmt: skip
            run = {**run, "set_aside": summary}
        report = build_report(events, classes, normal_class, run, self.out_dir)
        write_report(self.out_dir, report)
        return report


def stream(pipeline, outputs: RunOutputs, on_result=None) -> None:
    """Drive `pipeline` into `outputs` until the source ends, the window is closed or Ctrl-C.

    On Ctrl-C (or q in the window) capture stops, and the frames already read and the tracks still
    open are processed and written before returning, so no counted cell is lost.
    `on_result(result)` is called after each result (live displays).
    """
    import time

    def drain() -> None:
        for result in pipeline:
            start = time.perf_counter()
            outputs.write(result)
            pipeline.times.add("output", time.perf_counter() - start)
            if on_result is not None:
                on_result(result)
            if outputs.quit_requested:
                pipeline.stop()

    try:
        drain()
    except KeyboardInterrupt:
        log.warning("interrupted: finishing the frames already read")
        pipeline.stop()
        drain()
