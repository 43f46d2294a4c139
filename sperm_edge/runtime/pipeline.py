"""The stream: capture, cell finding, inference and output in separate threads joined by bounded queues.

    with open_backend(bundle) as backend, open_source(uri) as source, \\
            Pipeline(source, backend, bundle.card.classes, bundle.card.preprocess, config, policy) as pipeline:
        for result in pipeline:          # FrameResult, in frame order, on the calling (output) thread
            ...

- capture: reads frames; for live sources only the newest frame waits (no growing lag).
- prepare: finds the cells (or takes the whole frame in crop mode), measures the slide's
  motion, follows the cells across frames (`tracking`), picks those the network must see
  (`budget`: a tracked cell until its class is settled), crops and preprocesses exactly as
  training did.
- inference: runs the backend in batches (crop mode batches several frames), adds what it said
  to the cells' tracks, counts and flags them.
- output: the caller's thread (events, flagged cells, video, window; see `outputs`).

Splitting cell finding from the network lets them overlap on different cores. Every stage's
time is recorded, so the bottleneck shows while the stream runs and in the report.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from sperm_edge.calibration import calibrated_probs
from sperm_edge.drift import DriftModel
from sperm_edge.engines.base import Backend
from sperm_edge.errors import SpermEdgeError
from sperm_edge.localize import CellFinder, Detection, LocalizerConfig, crop, find_cells, isolate, whole_frame
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch
from sperm_edge.runtime.budget import InferenceBudget
from sperm_edge.runtime.events import Event
from sperm_edge.runtime.flagging import FlagPolicy
from sperm_edge.runtime.sources.base import Frame, VideoSource
from sperm_edge.runtime.timing import STAGES, StageTimes
from sperm_edge.runtime.tracking import Observation, Track, Tracker, TrackerConfig, TrackStep
from sperm_edge.runtime.verifier import NOT_A_HEAD, SIGHTINGS, HeadVerifier
from sperm_edge.tta import VIEWS, dihedral_view, undo_dihedral_view

log = logging.getLogger(__name__)

__all__ = ["STAGES", "CellEvent", "CellResult", "FrameResult", "Pipeline", "PipelineConfig"]

MODES = ("field", "crop")
UNLIKE_TRAINING = "unlike_training"  # the flag reason of a cell set aside by `PipelineConfig.set_aside_above`
_END = object()
# The prepare stage picks a frame's cells for the network from the tracks as classified up to this many frames
# before it (it runs that far ahead of the network at most), so the picks do not depend on thread timing.
DECISION_LAG = 2


@dataclass
class PipelineConfig:
    """How frames become cells. `track` None: on for videos and cameras in field mode, off for still images.

    `temperature`: the bundle's temperature scaling (`Bundle.temperature`), applied to every backend's
    logits before the softmax, so confidences (and the flags that read them) are calibrated.
    `drift`: the bundle's drift model (`Bundle.drift_model()`): each cell's pooled features get a
    drift score; its event carries the median over the cell's sightings as `drift_score`.
    `set_aside_above`: in field mode, a cell whose `drift_score` exceeds this (e.g. the bundle's
    `DriftModel.set_aside_threshold`, set on its validation crops) is unlike any training cell (debris
    a bundle without a non-sperm class cannot name): its event gets `counted` False and the flag
    reason `unlike_training`, for a person to review, and is not counted (`outputs.RunOutputs`).
    `verifier`: in field mode, the bundle's head verifier scores each reported cell on its first classified
    sightings (`runtime.verifier.SIGHTINGS`; `verifier` in its event); below its threshold the cell is set aside
    the same way, reason `not_a_head`.
    `rolling_views`: in field mode, frame i's crops go to the network in dihedral view i mod 8 (rotations and
    mirror images, `sperm_edge.tta`; their cam maps turned back), so the class a track averages over its
    sightings is averaged over orientations too, at no extra inference (`--tta` costs 8 per crop).
    `find`: the localiser (`localize.CellFinder`), called with `localizer`; `budget`: which tracked cells go
    to the network in a frame (`runtime.budget`; untracked cells always do)."""

    mode: str = "field"
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    find: CellFinder = find_cells
    budget: InferenceBudget = field(default_factory=InferenceBudget)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    track: bool | None = None
    max_batch: int = 32
    queue_size: int = 4
    max_frames: int | None = None
    keep_frames: bool = True
    temperature: float = 1.0
    drift: DriftModel | None = None
    set_aside_above: float | None = None
    verifier: HeadVerifier | None = None  # field mode: cells it rejects are set aside (`runtime.verifier`)
    rolling_views: bool = False
    join_timeout: float = 5.0  # seconds `__exit__` waits for its threads (a read stuck in a driver is left behind)
    # seconds after `stop()` within which the stream must end; past it iterating fails (an engine call that never
    # returns would otherwise hold the run, and a service's stop, forever)
    stop_timeout: float = 15.0


@dataclass
class CellResult:
    """A cell in the current frame, for drawing: head box (x0, y0, x1, y1), class, confidence, track."""

    box: tuple[int, int, int, int]
    label: str
    confidence: float
    track: int
    flagged: bool
    cam: np.ndarray | None = None  # Grad-CAM++ of its class on the feature grid (engine output), when the model has it
    crop: np.ndarray | None = None  # the crop the network saw (for heatmaps of every cell)


@dataclass
class CellEvent:
    """A counted cell: its JSON event, the pixels kept for flagged cells (crop and frame), and the
    network's outputs for that crop: its class probabilities and, when the model has them, the
    engine's Grad-CAM++ maps (K x Hf x Wf)."""

    event: dict
    crop: np.ndarray | None = None
    frame: np.ndarray | None = None
    cam: np.ndarray | None = None
    crop_probs: np.ndarray | None = None


@dataclass
class FrameResult:
    """What one frame produced; the last result of a tracked stream has `frame` None and the last events."""

    frame: Frame | None
    cells: list[CellResult]
    events: list[CellEvent]
    fps: float


@dataclass
class _Prepared:
    """Frames ready for the network: their cells, each frame's track step (None untracked), the indices of the
    cells that go to the network (`picked`), their crops and the network input."""

    frames: list[Frame]
    cells: list[list[Detection]]
    steps: list[TrackStep | None]
    picked: list[list[int]]
    crops: list[np.ndarray]
    batch: np.ndarray
    view: int = 0  # the dihedral view `batch` is in (`PipelineConfig.rolling_views`)


class Pipeline:
    """Runs `source` through `backend` in threads; iterate it on the output thread."""

    def __init__(
        self,
        source: VideoSource,
        backend: Backend,
        classes: Sequence[str],
        spec: PreprocessSpec,
        config: PipelineConfig | None = None,
        policy: FlagPolicy | None = None,
    ) -> None:
        self.source, self.backend, self.classes, self.spec = source, backend, list(classes), spec
        self._stopped_at: float | None = None
        self.config = config or PipelineConfig()
        if self.config.mode not in MODES:
            raise SpermEdgeError(f"unknown mode {self.config.mode!r}; choose field or crop")
        self.policy = policy or FlagPolicy.for_classes([])
        track = self.config.track
        if track is None:
            scheme = getattr(getattr(source, "parsed", None), "scheme", "image")
            track = self.config.mode == "field" and scheme not in ("image", "folder", "glob")
        self.tracker = Tracker(len(self.classes), self.config.tracker) if track else None
        self.times = StageTimes()
        self.frames = self.cells_seen = self.inferences = self.events = self.dropped = 0
        self._next_id = 1
        self._stop, self._abandoned = threading.Event(), threading.Event()
        latest = bool(source.options.latest_only)
        crop_batch = self.config.max_batch if self.config.mode == "crop" else 1
        self._frames: queue.Queue = queue.Queue(maxsize=1 if latest else max(self.config.queue_size, crop_batch))
        self._prepared: queue.Queue = queue.Queue(maxsize=2)
        self._results: queue.Queue = queue.Queue(maxsize=max(2, self.config.queue_size))
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._started = self._cpu0 = 0.0
        self._t0 = time.time()
        self._stamps: deque[float] = deque(maxlen=30)
        self._prepared_seq = 0  # frames the prepare stage has handled (sequence numbers, not source indices)
        self._classified_seq = 0  # frames whose classified sightings have joined their tracks
        self._classified = threading.Condition()

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Pipeline:
        self._started, self._t0, self._cpu0 = time.perf_counter(), time.time(), time.process_time()
        stages = ((self._capture_loop, self._frames), (self._prepare_loop, self._prepared),
                  (self._infer_loop, self._results))  # fmt: skip
        for target, out in stages:
            thread = threading.Thread(target=self._guard(target, out), name=target.__name__[1:], daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._abandoned.set()  # nobody reads the results any more: unblock the threads
        deadline = time.monotonic() + self.config.join_timeout
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                for q in (self._results, self._prepared, self._frames):
                    self._drain_one(q)
                thread.join(timeout=0.05)
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:  # daemon threads: they end with the process, or when their blocked call returns
            log.warning("pipeline threads still busy after %.1f s, left behind: %s", self.config.join_timeout, stuck)
        self._threads = []

    def stop(self) -> None:
        """Stop capturing (thread-safe). Frames already read are still processed and open tracks reported:
        keep iterating to collect the last events."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self._stop.set()
        self.source.stop()

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called (the remaining frames and tracks are still being delivered)."""
        return self._stop.is_set()

    def __iter__(self) -> Iterator[FrameResult]:
        while True:
            try:
                item = self._results.get(timeout=0.2)
            except queue.Empty:
                self._check_stop_deadline()
                continue
            if item is _END:
                self._results.put(_END)  # a second iteration ends at once
                if self._error is not None:
                    raise self._error
                return
            yield item

    @property
    def batch_limit(self) -> int:
        """Crops per network call: `max_batch`, or the engine's own maximum when smaller (a TensorRT engine's
        profile), so a frame with more cells than the engine takes is split instead of failing."""
        engine_max = self.backend.input_spec.max_batch if self.backend.is_active else None
        return min(self.config.max_batch, engine_max) if engine_max else self.config.max_batch

    def _check_stop_deadline(self) -> None:
        """Fail the run when it has not ended `stop_timeout` seconds after `stop()`: a stage is stuck."""
        if self._stopped_at is None or time.monotonic() - self._stopped_at <= self.config.stop_timeout:
            return
        stuck = [t.name for t in self._threads if t.is_alive()]
        raise SpermEdgeError(
            f"the stream did not end within {self.config.stop_timeout:g} s of being stopped: stage(s) "
            f"{', '.join(stuck) or '?'} stuck (an inference or capture call that never returned?); the frames "
            "finished before are in the report"
        )

    # -- figures ----------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._started if self._started else 0.0

    @property
    def fps(self) -> float:
        """Frames per second over the whole run so far."""
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def recent_fps(self) -> float:
        """Frames per second over the last 30 frames."""
        if len(self._stamps) < 2:
            return self.fps
        return (len(self._stamps) - 1) / max(1e-9, self._stamps[-1] - self._stamps[0])

    def stats(self) -> dict:
        return {
            "frames": self.frames,
            "cells_seen": self.cells_seen,
            "inferences": self.inferences,  # crops the network classified (`runtime.budget`)
            "events": self.events,
            "fps": round(self.fps, 2),
            "elapsed_s": round(self.elapsed, 3),
            # CPU time of the whole process per frame: what the stream costs, even on a busy machine
            "cpu_ms_per_frame": round((time.process_time() - self._cpu0) * 1000.0 / max(1, self.frames), 2),
            "stages_ms": self.times.summary(),
            "queue_dropped": self.dropped,
            "source_stats": self.source.stats.to_dict(),
        }

    # -- plumbing ---------------------------------------------------------------------------------
    def _guard(self, target, out: queue.Queue):
        def run() -> None:
            try:
                target()
            except BaseException as err:  # surfaced on the output thread
                self._error = self._error or err
                self.stop()
            finally:
                self._put(out, _END)

        return run

    def _put(self, q: queue.Queue, item: object) -> bool:
        """Blocking put that gives up only once the reader is gone (`__exit__`)."""
        while not self._abandoned.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    @staticmethod
    def _drain_one(q: queue.Queue) -> None:
        try:
            q.get_nowait()
        except queue.Empty:
            pass

    # -- capture ----------------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        frames = iter(self.source)
        latest = bool(self.source.options.latest_only)
        count = 0
        while not self._stop.is_set():
            start = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                return
            self.times.add("capture", time.perf_counter() - start)
            if latest:  # keep only the newest frame waiting
                try:
                    self._frames.put_nowait(frame)
                except queue.Full:
                    self._drain_one(self._frames)
                    self.dropped += 1
                    self._frames.put_nowait(frame)
            elif not self._put(self._frames, frame):
                return
            count += 1
            if self.config.max_frames and count >= self.config.max_frames:
                return

    # -- prepare ----------------------------------------------------------------------------------
    def _next_frames(self) -> list[Frame] | None:
        """The next frame, plus (crop mode) any already waiting, up to max_batch: one network call for all."""
        first = self._frames.get()
        if first is _END:
            return None
        batch = [first]
        while self.config.mode == "crop" and len(batch) < self.batch_limit:
            try:
                item = self._frames.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self._frames.put(_END)  # seen after this batch
                break
            batch.append(item)
        return batch

    def _prepare_loop(self) -> None:
        while (frames := self._next_frames()) is not None:
            t0 = time.perf_counter()
            cells, steps, picked, tracking = [], [], [], 0.0
            for frame in frames:
                if self.config.mode == "crop":
                    dets = [whole_frame(frame.image)]
                else:
                    dets = self.config.find(frame.image, self.config.localizer)
                start = time.perf_counter()
                step, chosen = self._follow(frame, dets)
                tracking += time.perf_counter() - start
                cells.append(dets)
                steps.append(step)
                picked.append(chosen)
            t1 = time.perf_counter()
            crops = [
                self._crop(frame.image, dets[i], dets)
                for frame, dets, chosen in zip(frames, cells, picked, strict=True)
                for i in chosen
            ]
            batch = preprocess_batch(crops, self.spec)
            view = frames[0].index % VIEWS if self.config.rolling_views and self.config.mode == "field" else 0
            if view:
                batch = np.ascontiguousarray(dihedral_view(batch, view))
            t2 = time.perf_counter()
            self.times.add("localisation", t1 - t0 - tracking, len(frames))
            if self.tracker is not None:
                self.times.add("tracking", tracking, len(frames))
            self.times.add("preprocessing", t2 - t1, len(frames))
            if not self._put(self._prepared, _Prepared(frames, cells, steps, picked, crops, batch, view)):
                return

    def _follow(self, frame: Frame, dets: list[Detection]) -> tuple[TrackStep | None, list[int]]:
        """The frame's track step (after the slide's motion) and the cells the network must see in it."""
        seq, self._prepared_seq = self._prepared_seq, self._prepared_seq + 1
        if self.tracker is None:
            return None, list(range(len(dets)))
        self.tracker.observe_motion(frame.image)
        step = self.tracker.assign(dets, frame.index, frame.image.shape[:2])
        budget = self.config.budget
        known = seq - DECISION_LAG  # the tracks' classes are read as of this frame
        if budget.policy != "every_frame":
            self._wait_classified(known)
        chosen = []
        for i, (det, track, counted) in enumerate(zip(dets, step.tracks, step.counted_before, strict=True)):
            settled = track.settled_as_of(known)
            if budget.needs_inference(track, det, counted, settled):
                chosen.append(i)
        for i in chosen:
            step.tracks[i].inferred_area = dets[i].area
        return step, chosen

    def _wait_classified(self, seq: int) -> None:
        """Block until frame `seq`'s sightings have joined their tracks (or the run is ending)."""
        with self._classified:
            while self._classified_seq <= seq and not self._abandoned.is_set() and self._error is None:
                self._classified.wait(timeout=0.1)

    def _crop(self, image: np.ndarray, det: Detection, dets: list[Detection]) -> np.ndarray:
        """The network's view of one cell: the frame (crop mode), or its square, the other heads painted out."""
        if self.config.mode == "crop":
            return image
        patch = crop(image, det.crop_box)
        return isolate(patch, det, dets) if self.config.localizer.isolate else patch

    # -- inference --------------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        while (item := self._prepared.get()) is not _END:
            t0 = time.perf_counter()
            step = self.batch_limit
            outputs = [self.backend.infer(item.batch[i : i + step]) for i in range(0, len(item.batch), step)]
            self.inferences += len(item.batch)
            logits = [o.logits for o in outputs]
            probs = (
                calibrated_probs(np.concatenate(logits), self.config.temperature)
                if logits
                else np.zeros((0, len(self.classes)), np.float32)
            )
            cams = np.concatenate([o.cam for o in outputs]) if outputs and outputs[0].cam is not None else None
            if cams is not None and item.view:
                cams = np.ascontiguousarray(undo_dihedral_view(cams, item.view))
            t1 = time.perf_counter()
            drift = self._drift_scores(outputs)  # postprocessing time: a few matrix products
            results, k = [], 0
            for frame, dets, track_step, chosen in zip(item.frames, item.cells, item.steps, item.picked, strict=True):
                n = len(chosen)
                cam = cams[k : k + n] if cams is not None else [None] * n
                scores = drift[k : k + n] if drift is not None else [None] * n
                observations = self._observations(
                    frame, [dets[i] for i in chosen], item.crops[k : k + n], probs[k : k + n], cam, scores, item.view
                )
                results.append(self._postprocess(frame, dets, track_step, chosen, observations))
                k += n
            self.times.add("network", t1 - t0, len(item.frames))
            self.times.add("postprocessing", time.perf_counter() - t1, len(item.frames))
            for result in results:
                if not self._put(self._results, result):
                    return
        if self.tracker is not None:
            events = [self._event(track) for track in self.tracker.flush()]
            self._put(self._results, FrameResult(None, [], events, self.fps))

    def _drift_scores(self, outputs: list) -> np.ndarray | None:
        """Each cell's drift score from its pooled features; None without a drift model or a `features` output."""
        if self.config.drift is None or not outputs or outputs[0].features is None:
            return None
        return self.config.drift.score(np.concatenate([o.features for o in outputs]))

    def _observations(
        self, frame: Frame, dets: list[Detection], crops: list[np.ndarray], probs: np.ndarray,
        cams: Sequence[np.ndarray | None], drift: Sequence[float | None], view: int,
    ) -> list[Observation]:  # fmt: skip
        """The classified sightings of one frame (the cells the network saw in it)."""
        now = time.perf_counter() - self._started
        keep = frame.image if self.config.keep_frames and self.config.mode == "field" else None
        return [
            Observation(frame.index, d, p, c, keep, now, frame.name, cam, score, view, frame.meta)
            for d, p, c, cam, score in zip(dets, probs, crops, cams, drift, strict=True)
        ]

    def _postprocess(
        self, frame: Frame, dets: list[Detection], step: TrackStep | None, chosen: list[int],
        observations: list[Observation],
    ) -> FrameResult:  # fmt: skip
        """The frame's cells (for drawing) and events: its classified sightings join their tracks, and the tracks
        due are reported, now that every sighting up to this frame is classified."""
        seq = self.frames
        self.frames += 1
        self.cells_seen += len(dets)
        self._stamps.append(time.perf_counter())
        seen: dict[int, Observation] = dict(zip(chosen, observations, strict=True))
        if step is not None:
            for i, obs in seen.items():
                track = step.tracks[i]
                if not step.counted_before[i]:  # a counted cell's later sightings change nothing
                    track.add(obs)
                    if self.config.verifier is not None and len(track.head_views) < SIGHTINGS:
                        track.head_views.append(self.config.verifier.thumbnail(obs.crop))
                    settled = self.config.budget.is_settled(track, self.config.set_aside_above)
                    track.log_settled(seq, settled)
            events = [self._event(track) for track in step.report]
            for track in step.forget:
                track.release()
            ids = [track.id for track in step.tracks]
            with self._classified:
                self._classified_seq = seq + 1
                self._classified.notify_all()
        else:
            events = [self._single_event(obs) for obs in observations]
            ids = [e.event["id"] for e in events]
        cells = []
        for i, det in enumerate(dets):
            obs = seen.get(i)
            probs = obs.probs if obs is not None else step.tracks[i].probs  # not classified here: its track's class
            label = int(np.argmax(probs))
            conf = float(probs[label])
            flagged = bool(self.policy.reasons(self.classes[label], conf))
            cam = obs.cam[label] if obs is not None and obs.cam is not None else None
            crop_image = obs.crop if obs is not None else None
            cells.append(CellResult(det.head_box, self.classes[label], conf, ids[i], flagged, cam, crop_image))
        return FrameResult(frame, cells, events, self.recent_fps)

    # -- events -----------------------------------------------------------------------------------
    def _single_event(self, obs: Observation) -> CellEvent:
        track_id, self._next_id = self._next_id, self._next_id + 1
        return self._make_event(
            track_id, obs, obs.probs, 1, 1, obs.frame_index, obs.frame_index, 1.0, obs.drift, [obs.crop]
        )

    def _event(self, track: Track) -> CellEvent:
        obs = track.best
        event = self._make_event(
            track.id,
            obs,
            track.probs,
            track.reported_seen[0],
            track.inferences,
            track.first_frame,
            track.reported_seen[1],
            track.stability,
            track.drift,
            track.head_views,
        )
        track.release()
        return event

    def _make_event(
        self, track_id: int, obs: Observation, probs: np.ndarray, seen: int, inferences: int, first: int,
        last: int, stability: float, drift: float | None, head_views: list[np.ndarray],
    ) -> CellEvent:  # fmt: skip
        label = int(np.argmax(probs))
        confidence = float(probs[label])
        reasons = self.policy.reasons(self.classes[label], confidence, stability)
        drift = None if drift is None else round(float(drift), 4)  # the event's figure decides, as it reads
        gate = self.config.set_aside_above
        unlike = self.config.mode == "field" and gate is not None and drift is not None and drift > gate
        if unlike:
            reasons.append(UNLIKE_TRAINING)
        verifier, head_score = self.config.verifier, None
        if verifier is not None and self.config.mode == "field" and obs.crop is not None:
            head_score = verifier.score(head_views or [obs.crop])
            if head_score < verifier.threshold:
                reasons.append(NOT_A_HEAD)
        det = obs.detection
        event = Event(
            id=track_id,
            time=datetime.fromtimestamp(self._t0 + obs.time, timezone.utc).isoformat(timespec="milliseconds"),
            t=obs.time,
            frame=obs.frame_index,
            box=list(det.head_box),
            crop_box=list(det.crop_box),
            label=self.classes[label],
            confidence=confidence,
            probs=dict(zip(self.classes, probs.tolist(), strict=True)),
            flag_reasons=reasons,
            frames_seen=seen,
            inferences=inferences,
            first_frame=first,
            last_frame=last,
            stability=stability,
            name=obs.name,
            camera=dict(obs.meta or {}),
            # `sperm-edge explain --event` shows the network the crop in this view again
            view=obs.view if self.config.rolling_views and self.config.mode == "field" else None,
            drift_score=drift,
            verifier=head_score,
            counted=not (unlike or NOT_A_HEAD in reasons),
        ).to_json()
        self.events += 1
        return CellEvent(event, obs.crop if reasons else None, obs.frame if reasons else None, obs.cam, obs.probs)
