"""Everything a run leaves behind, written on the output thread as results arrive.

OUT/events.jsonl            one line per counted cell (see `events`)
OUT/flagged/ID.png|.frame.jpg|.json   flagged cells (see `flagging`)
OUT/explanations/ID.png|.json         Grad-CAM++ of flagged cells (`--explain flagged|every`): from the
                                      engine's `cam` output (`explanations`), or for a model without one
                                      from the retained checkpoint in a background worker
OUT/annotated.mp4           when asked: frames with boxes, labels, confidence and FPS
OUT/report.json, report.md  at the end (see `report`)
"""

from __future__ import annotations

import logging
from pathlib import Path

from sperm_edge.explain.worker import ExplainJob, ExplainWorker
from sperm_edge.runtime.annotate import VideoFileOutput, Window, draw
from sperm_edge.runtime.events import EVENTS_FILE, EventLog, read_events
from sperm_edge.runtime.explanations import EngineExplanations
from sperm_edge.runtime.flagging import FlagStore, event_name
from sperm_edge.runtime.pipeline import FrameResult
from sperm_edge.runtime.report import build_report, write_report

log = logging.getLogger(__name__)

EXPLANATIONS_DIR = "explanations"


class RunOutputs:
    """Writes events, flagged cells, explanations, the annotated video and the window; then the report.

    `explanations` writes the engine's maps of flagged cells at once (and with `--explain every`
    keeps every cell's in `explanations.heatmaps`); `explainer`, the PyTorch worker, is the
    fallback for a model without a `cam` output.
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
    ) -> None:
        self.out_dir = Path(out_dir)
        self.explainer = explainer
        self.explanations = explanations
        self.flags = FlagStore(self.out_dir, flag_capacity)
        self.submitted = 0
        self.quit_requested = False
        self._log = EventLog(self.out_dir / EVENTS_FILE)
        self._video = VideoFileOutput(video, video_fps) if video else None
        self._window = Window() if window else None

    def __enter__(self) -> RunOutputs:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._log.__enter__()
        if self.explanations is not None:
            self.explanations.__enter__()
        if self._window is not None:
            self._window.__enter__()
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if self.explanations is not None:
            self.explanations.__exit__()  # writes the explanations still queued
        self._log.close()
        if self._video is not None:
            self._video.close(keep=exc_type is None or exc_type is KeyboardInterrupt)
        if self._window is not None:
            self._window.__exit__()

    def write(self, result: FrameResult) -> None:
        """Log the result's events, keep and explain its flagged cells, draw its frame."""
        for cell in result.events:
            event = cell.event
            if event["flagged"] and cell.crop is not None:
                event.update(self.flags.add(event, cell.crop, cell.frame))
                if self.explanations is not None and cell.cam is not None:
                    event.update(self.explanations.write(event, cell.crop, cell.cam, cell.crop_probs))
                elif self.explainer is not None:
                    job = ExplainJob(
                        event_name(event["id"]),
                        cell.crop,
                        {"event": event["id"], "frame": event["frame"], "box": event["box"]},
                    )
                    self.submitted += int(self.explainer.submit(job))
            self._log.write(event)
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

    def finish(self, classes: list[str], normal_class: str | None, run: dict) -> dict:
        """Write report.json and report.md (call after the explainer has finished its queue)."""
        if self.explanations is not None:
            run = {**run, "explanations": self.explanations.summary()}
        elif self.explainer is not None:
            run = {**run, "explanations": {**self.explainer.summary(), "source": "torch", "submitted": self.submitted}}
        report = build_report(self.events, classes, normal_class, run, self.out_dir)
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
