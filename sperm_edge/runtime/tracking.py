"""Count each cell once on a moving slide: track heads in slide coordinates across frames.

When the technician moves the stage, every cell in view moves by the same shift. The shift
between consecutive frames is measured by phase correlation (Kuglin & Hines 1975; OpenCV's
`phaseCorrelate`) on a small, high-passed grey copy of each frame, so the camera's fixed
illumination does not pin it to zero; it is then refined by the median residual of the heads
that match. Accumulated shifts give each frame's offset on the slide, so a head's position is
known in slide coordinates. Heads are assigned to predicted tracks by the Hungarian method
(`scipy.optimize.linear_sum_assignment`, minimum total distance) on a gated cost: a pair further
apart than a gate proportional to the head size cannot match. A track ends when it leaves the
view or goes unseen for `max_missed` frames in view. It is reported once: when it ends, or after
`report_after` sightings (its class, confidence and stability are those of the sightings until
then), if it was seen at least `min_frames` times (`min_cut_frames` when every sighting was a piece
of a blob the localiser cut in two).

Association and classification are separate steps, so the pipeline can decide which tracks need the
network before it cuts a single crop (`runtime.budget`): `Tracker.assign` follows the heads (where a
cell is, whether it ended, when it is reported), `Track.add` takes what the network said of one
sighting, and a `TrackStep`'s reported tracks are turned into events once every sighting up to its
frame has been classified. `Tracker.update` does both at once for a caller with every result at hand.

Ended tracks are retired: they leave the list matched every frame for a spatial grid on the
slide, from which only those under the current view are fetched. So the cost per frame depends on
the cells in view, not on the area scanned. A cell that comes back into view later (serpentine
scans overlap) matches its retired track, wakes it and is not reported again. At most
`max_retired` retired tracks are remembered (the oldest are forgotten first), so memory is bounded
on a scan of any length.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from sperm_edge.localize import Detection


@dataclass
class TrackerConfig:
    """`gate` is the match radius as a multiple of the head's width (sqrt of its area), at least `min_gate` px.

    A track is reported when it ends, or once it has been seen `report_after` times (about a second
    of video), whichever comes first: a cell that stays in view is still logged promptly.
    """

    gate: float = 0.6
    min_gate: float = 10.0
    max_missed: int = 3
    min_frames: int = 2  # observations needed before a track is reported (drops one-frame false finds)
    # ... for a track seen only as a piece of a cut blob (`Detection.cut`): a long head with a waist is cut in
    # some frames and not in others, and its flickering second piece must not count as a cell
    min_cut_frames: int = 5
    report_after: int = 15
    motion: bool = True
    motion_scale: float = 0.125
    # Under this phase-correlation response two frames show different areas (the stage moved on, a new field): the
    # view jumps away, so every open track ends and nothing seen before is taken for a revisit. On a pan over real
    # smear fields (`data real-pan`) the response was 0.89-1.0 within a field and 0.26-0.47 at the jumps between
    # fields; composed real-crop and synthetic pans stay above 0.93. Without it, about one head a field was
    # matched to a track or a retired cell of the field before, and not counted.
    cut_response: float = 0.6
    grid: float = 256.0  # side of the retired tracks' grid cells on the slide, px
    # ended cells remembered for revisits: about 1 KB each, so at most ~20 MB on a run of any length (a
    # serpentine scan revisits the row before; a sample is a few hundred cells)
    max_retired: int = 20_000


CUT_JUMP = 1e7  # px the view is taken to move at a cut (`TrackerConfig.cut_response`): beyond any slide


class MotionEstimator:
    """Translation of the slide between consecutive frames (content displacement in frame pixels)."""

    def __init__(self, scale: float = 0.25) -> None:
        self.scale = scale
        self._prev: np.ndarray | None = None
        self._window: np.ndarray | None = None
        self.last_response = 0.0
        self.compared = False  # whether the last frame had a previous one to be compared with

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        small = cv2.resize(
            rgb, (max(8, round(w * self.scale)), max(8, round(h * self.scale))), interpolation=cv2.INTER_AREA
        )
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return grey - cv2.GaussianBlur(grey, (0, 0), 6.0)  # high-pass: drop the lamp's fixed shading

    def update(self, rgb: np.ndarray) -> tuple[float, float]:
        """Shift of this frame's content relative to the previous frame's; (0, 0) for the first."""
        cur = self._prepare(rgb)
        prev, self._prev = self._prev, cur
        self.compared = prev is not None and prev.shape == cur.shape
        if not self.compared:
            return 0.0, 0.0
        if self._window is None or self._window.shape != cur.shape:
            self._window = cv2.createHanningWindow(cur.shape[::-1], cv2.CV_32F)
        (dx, dy), self.last_response = cv2.phaseCorrelate(prev, cur, self._window)
        return dx / self.scale, dy / self.scale


@dataclass
class Observation:
    """One sighting of a head: where, what the network said, and the pixels (crop and frame) for flagging."""

    frame_index: int
    detection: Detection
    probs: np.ndarray
    crop: np.ndarray
    frame: np.ndarray | None = None
    time: float = 0.0
    name: str = ""
    cam: np.ndarray | None = None  # the engine's Grad-CAM++ maps of this crop (K x Hf x Wf), when it has them
    drift: float | None = None  # the crop's drift score (`sperm_edge.drift`), when the bundle has a drift model
    view: int = 0  # the dihedral view the network saw the crop in (`sperm_edge.tta`; cam already turned back)
    meta: dict | None = None  # the camera SDK's frame id and timestamp (`runtime.sources.camera`), when it has them


@dataclass
class Track:
    """A cell followed across frames; `world` is its head centre in slide coordinates.

    Two kinds of state, each written by one step: where the cell is and how often it was seen
    (`Tracker.assign`), and what the network said of the sightings it classified (`add`).
    """

    id: int
    world: np.ndarray
    first_frame: int
    last_frame: int
    size: float
    probs_sum: np.ndarray
    votes: np.ndarray
    n: int = 0
    whole: int = 0  # sightings not cut from a larger blob
    missed: int = 0
    active: bool = True
    reported: bool = False
    # sightings and last frame when it was reported: its event's figures (the track is followed on meanwhile)
    reported_seen: tuple[int, int] = (0, 0)
    inferred_area: float = 0.0  # the head area at the last sighting sent to the network (`runtime.budget`)
    best: Observation | None = None
    best_score: float = -1.0
    drift_scores: list[float] = field(default_factory=list)
    head_views: list[np.ndarray] = field(default_factory=list)  # thumbnails the head verifier scores at report
    # (frame sequence number, settled) each time its settled state changed (`runtime.budget`), in order
    settle_log: list[tuple[int, bool]] = field(default_factory=list)

    def settled_as_of(self, seq: int) -> bool:
        """Whether it was settled once frame `seq` had been classified (a later change is not seen)."""
        for at, settled in reversed(self.settle_log):
            if at <= seq:
                return settled
        return False

    def log_settled(self, seq: int, settled: bool) -> None:
        """Record the settled state after frame `seq`'s sighting, when it changed."""
        if settled != (self.settle_log[-1][1] if self.settle_log else False):
            self.settle_log.append((seq, settled))

    def sight(self, detection: Detection, world: np.ndarray, frame_index: int) -> None:
        """Seen again at `world` (slide coordinates) in frame `frame_index`."""
        self.world = (self.world * self.n + world) / (self.n + 1) if self.n else world
        self.n += 1
        self.whole += int(not detection.cut)
        self.last_frame = frame_index
        self.missed = 0
        self.active = True

    def add(self, obs: Observation) -> None:
        """What the network said of one sighting: it joins the cell's mean class, votes and drift score."""
        self.probs_sum = self.probs_sum + obs.probs
        self.votes[int(np.argmax(obs.probs))] += 1
        score = float(obs.probs.max())
        if score > self.best_score:
            self.best, self.best_score = obs, score
        if obs.drift is not None:
            self.drift_scores.append(float(obs.drift))

    @property
    def inferences(self) -> int:
        """How many of its sightings the network classified."""
        return int(self.votes.sum())

    @property
    def drift(self) -> float | None:
        """The cell's drift score: the median of its sightings' (None without a drift model)."""
        return float(np.median(self.drift_scores)) if self.drift_scores else None

    @property
    def probs(self) -> np.ndarray:
        """Mean class probabilities over the classified sightings."""
        return self.probs_sum / max(1, self.inferences)

    @property
    def label(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def stability(self) -> float:
        """Share of classified sightings whose top class agrees with the track's class."""
        total = self.inferences
        return float(self.votes[self.label]) / total if total else 1.0

    def release(self) -> None:
        """Drop the pixels once reported; the position stays to recognise a revisit."""
        self.best, self.best_score = None, -1.0
        self.drift_scores, self.head_views = [], []


@dataclass
class TrackStep:
    """One frame's association: the track of each detection, whether it had been counted before this frame,
    the tracks to report once this frame's sightings are classified, and the ended ones to forget."""

    tracks: list[Track]
    counted_before: list[bool]
    report: list[Track]
    forget: list[Track]


class RetiredTracks:
    """Ended tracks by position on the slide: a grid of `cell`-px squares, oldest forgotten beyond `limit`."""

    def __init__(self, cell: float, limit: int) -> None:
        self.cell, self.limit = cell, limit
        self._tracks: dict[int, Track] = {}  # insertion order = retirement order
        self._grid: dict[tuple[int, int], set[int]] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def _key(self, world: np.ndarray) -> tuple[int, int]:
        return int(world[0] // self.cell), int(world[1] // self.cell)

    def add(self, track: Track) -> None:
        self._tracks[track.id] = track
        self._grid.setdefault(self._key(track.world), set()).add(track.id)
        while len(self._tracks) > self.limit:
            self.pop(next(iter(self._tracks)))

    def pop(self, track_id: int) -> Track:
        track = self._tracks.pop(track_id)
        key = self._key(track.world)
        ids = self._grid[key]
        ids.discard(track_id)
        if not ids:
            del self._grid[key]
        return track

    def within(self, x0: float, y0: float, x1: float, y1: float) -> list[Track]:
        """Retired tracks whose slide position may lie in the rectangle (whole grid cells are returned)."""
        out = []
        for gx in range(int(x0 // self.cell), int(x1 // self.cell) + 1):
            for gy in range(int(y0 // self.cell), int(y1 // self.cell) + 1):
                out.extend(self._tracks[i] for i in self._grid.get((gx, gy), ()))
        return out


@dataclass
class Tracker:
    """Frame-to-frame association of detections; `update` returns each detection's track id."""

    num_classes: int
    config: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self) -> None:
        self.tracks: list[Track] = []  # active: matched every frame
        self.retired = RetiredTracks(self.config.grid, self.config.max_retired)
        self.offset = np.zeros(2)
        self._motion = MotionEstimator(self.config.motion_scale) if self.config.motion else None
        self._ids = itertools.count(1)

    def observe_motion(self, rgb: np.ndarray) -> tuple[float, float]:
        """Estimate the slide's motion from this frame and apply it (call before `update`)."""
        if self._motion is None:
            return 0.0, 0.0
        shift = self._motion.update(rgb)
        if self._motion.last_response < self.config.cut_response and self._motion.compared:
            shift = (CUT_JUMP, CUT_JUMP)  # another area of the slide: far from every track, open or retired
        self.move(shift)
        return shift

    def move(self, shift: tuple[float, float]) -> None:
        """The frame's content moved by `shift` (pixels) since the previous frame."""
        self.offset = self.offset - np.asarray(shift, dtype=np.float64)

    def update(self, observations: list[Observation], frame_shape: tuple[int, int]) -> tuple[list[int], list[Track]]:
        """Match and classify this frame's observations at once; returns (track id per observation, tracks to
        report now). A sighting of a cell already counted only keeps it from being counted again."""
        frame_index = observations[0].frame_index if observations else 0
        step = self.assign([o.detection for o in observations], frame_index, frame_shape)
        for obs, track, counted in zip(observations, step.tracks, step.counted_before, strict=True):
            if not counted:
                track.add(obs)
        for track in step.forget:
            track.release()
        return [t.id for t in step.tracks], step.report

    def assign(self, detections: list[Detection], frame_index: int, frame_shape: tuple[int, int]) -> TrackStep:
        """Follow this frame's detections: match or start their tracks, end the tracks gone, pick those to report."""
        h, w = frame_shape
        pos = np.array([d.center for d in detections], dtype=np.float64).reshape(-1, 2)
        sizes = np.array([np.sqrt(d.area) for d in detections]).reshape(-1)
        if self.tracks and len(detections):
            self._refine_offset(pos, sizes)
        candidates = self._candidates(w, h) if len(detections) else self.tracks
        pairs = self._match(pos, sizes, candidates)
        tracks, counted, matched = [], [], set()
        for i, det in enumerate(detections):
            world = pos[i] + self.offset
            j = pairs.get(i)
            if j is None:
                track = Track(
                    next(self._ids),
                    world,
                    frame_index,
                    frame_index,
                    float(sizes[i]),
                    np.zeros(self.num_classes),
                    np.zeros(self.num_classes, dtype=np.int64),
                )
                self.tracks.append(track)
            else:
                track = candidates[j]
                if not track.active:  # a revisit: wake the retired track
                    self.retired.pop(track.id)
                    self.tracks.append(track)
            counted.append(track.reported)
            track.sight(det, world, frame_index)
            tracks.append(track)
            matched.add(track.id)
        ended, still = [], []
        for track in self.tracks:
            if track.id not in matched:
                px, py = track.world - self.offset
                margin = track.size
                in_view = margin < px < w - margin and margin < py < h - margin
                track.missed += 1 if in_view else 0
                if not in_view or track.missed > self.config.max_missed:
                    track.active = False
                    ended.append(track)
                    continue
            still.append(track)
        self.tracks = still
        confirmed = [t for t in self.tracks if not t.reported and t.n >= self.config.report_after]
        report, forget = self._report(ended + confirmed)
        return TrackStep(tracks, counted, report, forget)

    def flush(self) -> list[Track]:
        """End every active track (end of stream); returns those to report (the rest are released)."""
        ended, self.tracks = self.tracks, []
        for track in ended:
            track.active = False
        report, forget = self._report(ended)
        for track in forget:
            track.release()
        return report

    def _report(self, tracks: list[Track]) -> tuple[list[Track], list[Track]]:
        """Mark the tracks to report now and retire the ended ones; returns (to report, ended blips to forget)."""
        c = self.config
        out = [t for t in tracks if not t.reported and t.n >= (c.min_frames if t.whole else c.min_cut_frames)]
        for track in out:
            track.reported = True
            track.reported_seen = (track.n, track.last_frame)
        forget = []
        for track in tracks:
            if track.active:
                continue
            if track.reported:
                self.retired.add(track)
            else:
                forget.append(track)
        return out, forget

    def _candidates(self, w: int, h: int) -> list[Track]:
        """Active tracks, then the retired ones under the view (with a margin for the motion estimate's error)."""
        m = self.config.grid / 2
        x0, y0 = self.offset
        return self.tracks + self.retired.within(x0 - m, y0 - m, x0 + w + m, y0 + h + m)

    def _gates(self, sizes: np.ndarray) -> np.ndarray:
        return np.maximum(self.config.min_gate, self.config.gate * sizes)

    def _distances(self, pos: np.ndarray, tracks: list[Track]) -> np.ndarray:
        predicted = np.array([t.world for t in tracks]).reshape(-1, 2) - self.offset
        return np.linalg.norm(pos[:, None, :] - predicted[None, :, :], axis=2)

    def _refine_offset(self, pos: np.ndarray, sizes: np.ndarray) -> None:
        """Correct the slide offset by the median residual of unambiguous nearest matches."""
        dist = self._distances(pos, self.tracks)
        nearest = dist.argmin(axis=1)
        close = dist[np.arange(len(pos)), nearest] < 2 * self._gates(sizes)
        if close.sum() >= 2:
            predicted = np.array([self.tracks[j].world for j in nearest[close]]) - self.offset
            self.offset = self.offset + np.median(predicted - pos[close], axis=0)

    def _match(self, pos: np.ndarray, sizes: np.ndarray, tracks: list[Track]) -> dict[int, int]:
        """Minimum-total-distance assignment within the gate: {observation index: index into `tracks`}."""
        if not tracks or not len(pos):
            return {}
        dist = self._distances(pos, tracks)
        gates = self._gates(sizes)[:, None]
        allowed = dist < gates
        if not allowed.any():
            return {}
        cost = np.where(allowed, dist, 1e9)  # a forbidden pair costs more than any set of allowed ones
        rows, cols = linear_sum_assignment(cost)
        return {int(i): int(j) for i, j in zip(rows, cols, strict=True) if allowed[i, j]}
