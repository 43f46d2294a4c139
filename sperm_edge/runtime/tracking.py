"""Count each cell once on a moving slide: track heads in slide coordinates across frames.

When the technician moves the stage, every cell in view moves by the same shift. The shift
between consecutive frames is measured by phase correlation (Kuglin & Hines 1975; OpenCV's
`phaseCorrelate`) on a small, high-passed grey copy of each frame, so the camera's fixed
illumination does not pin it to zero; it is then refined by the median residual of the heads
that match. Accumulated shifts give each frame's offset on the slide, so a head's position is
known in slide coordinates. Heads are matched greedily to the nearest predicted track within a
gate proportional to the head size. A track ends when it leaves the view or goes unseen for
`max_missed` frames in view. It is reported once: when it ends, or after `report_after`
sightings (its class, confidence and stability are those of the sightings until then). A cell
that comes back into view later (serpentine scans overlap) matches its old track and is not
reported again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

from sperm_edge.runtime.localize import Detection


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
    report_after: int = 15
    motion: bool = True
    motion_scale: float = 0.125


class MotionEstimator:
    """Translation of the slide between consecutive frames (content displacement in frame pixels)."""

    def __init__(self, scale: float = 0.25) -> None:
        self.scale = scale
        self._prev: np.ndarray | None = None
        self._window: np.ndarray | None = None
        self.last_response = 0.0

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
        if prev is None or prev.shape != cur.shape:
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


@dataclass
class Track:
    """A cell followed across frames; `world` is its head centre in slide coordinates."""

    id: int
    world: np.ndarray
    first_frame: int
    last_frame: int
    size: float
    probs_sum: np.ndarray
    votes: np.ndarray
    n: int = 0
    missed: int = 0
    active: bool = True
    reported: bool = False
    best: Observation | None = None
    best_score: float = -1.0

    def add(self, obs: Observation, world: np.ndarray) -> None:
        self.world = (self.world * self.n + world) / (self.n + 1) if self.n else world
        self.n += 1
        self.last_frame = obs.frame_index
        self.missed = 0
        self.active = True
        if self.reported:
            return  # already counted: a revisit only keeps the cell from being counted again
        self.probs_sum = self.probs_sum + obs.probs
        self.votes[int(np.argmax(obs.probs))] += 1
        score = float(obs.probs.max())
        if score > self.best_score:
            self.best, self.best_score = obs, score

    @property
    def probs(self) -> np.ndarray:
        """Mean class probabilities over the sightings."""
        return self.probs_sum / max(1, int(self.votes.sum()))

    @property
    def label(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def stability(self) -> float:
        """Share of sightings whose top class agrees with the track's class."""
        total = int(self.votes.sum())
        return float(self.votes[self.label]) / total if total else 1.0

    def release(self) -> None:
        """Drop the pixels once reported; the position stays to recognise a revisit."""
        self.best, self.best_score = None, -1.0


@dataclass
class Tracker:
    """Frame-to-frame association of detections; `update` returns each detection's track id."""

    num_classes: int
    config: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self) -> None:
        self.tracks: list[Track] = []
        self.offset = np.zeros(2)
        self._motion = MotionEstimator(self.config.motion_scale) if self.config.motion else None
        self._ids = itertools.count(1)

    def observe_motion(self, rgb: np.ndarray) -> tuple[float, float]:
        """Estimate the slide's motion from this frame and apply it (call before `update`)."""
        if self._motion is None:
            return 0.0, 0.0
        shift = self._motion.update(rgb)
        self.move(shift)
        return shift

    def new_estimator(self) -> MotionEstimator | None:
        """A motion estimator for another thread: its shifts go to `move`, in frame order."""
        return MotionEstimator(self.config.motion_scale) if self.config.motion else None

    def move(self, shift: tuple[float, float]) -> None:
        """The frame's content moved by `shift` (pixels) since the previous frame."""
        self.offset = self.offset - np.asarray(shift, dtype=np.float64)

    def update(self, observations: list[Observation], frame_shape: tuple[int, int]) -> tuple[list[int], list[Track]]:
        """Match this frame's observations; returns (track id per observation, tracks to report now)."""
        h, w = frame_shape
        pos = np.array([o.detection.center for o in observations], dtype=np.float64).reshape(-1, 2)
        sizes = np.array([np.sqrt(o.detection.area) for o in observations]).reshape(-1)
        if self.tracks and len(observations):
            self._refine_offset(pos, sizes)
        pairs = self._match(pos, sizes)
        ids = []
        for i, obs in enumerate(observations):
            world = pos[i] + self.offset
            j = pairs.get(i)
            if j is None:
                track = Track(
                    next(self._ids),
                    world,
                    obs.frame_index,
                    obs.frame_index,
                    float(sizes[i]),
                    np.zeros(self.num_classes),
                    np.zeros(self.num_classes, dtype=np.int64),
                )
                self.tracks.append(track)
            else:
                track = self.tracks[j]
            track.add(obs, world)
            ids.append(track.id)
        matched = set(pairs.values())
        ended = []
        for j, track in enumerate(self.tracks):
            if not track.active or j in matched:
                continue
            px, py = track.world - self.offset
            margin = track.size
            in_view = margin < px < w - margin and margin < py < h - margin
            track.missed += 1 if in_view else 0
            if not in_view or track.missed > self.config.max_missed:
                track.active = False
                ended.append(track)
        confirmed = [t for t in self.tracks if t.active and not t.reported and t.n >= self.config.report_after]
        return ids, self._report(ended + confirmed)

    def flush(self) -> list[Track]:
        """End every active track (end of stream)."""
        ended = [t for t in self.tracks if t.active]
        for track in ended:
            track.active = False
        return self._report(ended)

    def _report(self, ended: list[Track]) -> list[Track]:
        out = [t for t in ended if not t.reported and t.n >= self.config.min_frames]
        for track in ended:
            if not track.reported and track.n < self.config.min_frames:
                track.release()
        for track in out:
            track.reported = True
        return out

    def _gates(self, sizes: np.ndarray) -> np.ndarray:
        return np.maximum(self.config.min_gate, self.config.gate * sizes)

    def _distances(self, pos: np.ndarray) -> np.ndarray:
        predicted = np.array([t.world for t in self.tracks]) - self.offset
        return np.linalg.norm(pos[:, None, :] - predicted[None, :, :], axis=2)

    def _refine_offset(self, pos: np.ndarray, sizes: np.ndarray) -> None:
        """Correct the slide offset by the median residual of unambiguous nearest matches."""
        dist = self._distances(pos)
        nearest = dist.argmin(axis=1)
        close = dist[np.arange(len(pos)), nearest] < 2 * self._gates(sizes)
        if close.sum() >= 2:
            predicted = np.array([self.tracks[j].world for j in nearest[close]]) - self.offset
            self.offset = self.offset + np.median(predicted - pos[close], axis=0)

    def _match(self, pos: np.ndarray, sizes: np.ndarray) -> dict[int, int]:
        """Greedy nearest-first assignment within the gate: {observation index: track index}."""
        if not self.tracks or not len(pos):
            return {}
        dist = self._distances(pos)
        gates = self._gates(sizes)[:, None]
        candidates = np.argwhere(dist < gates)
        order = np.argsort(dist[candidates[:, 0], candidates[:, 1]])
        pairs: dict[int, int] = {}
        used: set[int] = set()
        for i, j in candidates[order]:
            if i not in pairs and j not in used:
                pairs[int(i)] = int(j)
                used.add(int(j))
        return pairs
