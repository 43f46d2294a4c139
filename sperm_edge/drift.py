"""Drift warning: do a run's cells look like the crops the model was trained on?

The description of the training distribution is the Mahalanobis model of Lee et al. 2018 ("A
Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks") on
the network's pooled features: the training crops' features are projected on their first `dims`
principal components (PCA by SVD), each class gets its mean there, and all classes share one
covariance, shrunk towards a scaled identity by the Ledoit-Wolf rule (Ledoit & Wolf 2004), since
a HuSHeM training split has ~150 crops for 1280 features. A crop from another lab may differ
mostly off those components, so the part of its features that the projection drops counts too
(the residual of ViM, Wang et al. 2022): a cell's squared score is its squared Mahalanobis
distance to the nearest class mean plus `dims` times its squared residual norm over the
validation crops' mean squared residual (each part is about `dims` in distribution, so they
weigh alike).

Two thresholds, both set on the VALIDATION split (never the training split, whose own features
sit closer to the means than any new crop's, nor the test split):

- the cell threshold: the `quantile` (0.95) of the validation cells' scores; `share_out` is the
  share of a run's cells above it (about 5% in distribution);
- the run rule, a two-sample bootstrap test of the medians: warn when the run's median cell score
  exceeds the validation median by more than the 95th percentile of (median of a bootstrap run of
  as many validation cells) - (median of a bootstrap resample of the whole validation set). The
  second term carries the validation set's own sampling error (a few hundred crops, or 33 for
  HuSHeM), which a one-sample rule ignores: with it alone, runs from SMIDS's own test split
  warned 7.7% of the time. Runs of over 1000 cells use the threshold of 1000 (a little stricter;
  bounded memory). Fewer than 5 cells get no verdict.

`dims` (64) was chosen on validation data: the own validation crops against copies with synthetic
lab shifts (hue, gamma, greyscale, blur), best mean AUROC of 16 / 32 / 64 dims, with and without
the residual, and the energy score (`benchmarks/drift.py`).

Stored in the bundle as `drift.npz` (plain arrays, read with `allow_pickle=False`). numpy only:
the classify-only runtime scores cells with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from sperm_edge.errors import SpermEdgeError

DRIFT_FILE = "drift.npz"
METHOD = "mahalanobis-pca"
DEFAULT_DIMS = 64
CELL_QUANTILE = 0.95
SET_ASIDE_QUANTILE = 1.0  # field mode sets aside cells beyond every validation cell (see `set_aside_threshold`)
RUN_FALSE_ALARM = 0.05
BOOTSTRAP_RUNS = 2000
MIN_CELLS = 5  # fewer cells than this: no run-level verdict
MAX_BOOTSTRAP_CELLS = 1000  # longer runs use the threshold of 1000 cells (a little stricter; bounded memory)


@dataclass
class DriftModel:
    """PCA projection, class means and shared precision in the projected space, and the validation scores."""

    mean: np.ndarray  # C: the training features' mean
    components: np.ndarray  # C x d: the principal axes
    class_means: np.ndarray  # K x d
    precision: np.ndarray  # d x d: inverse of the shrunk shared covariance
    residual_scale: np.ndarray  # the validation crops' mean squared residual (0: residual not used)
    val_scores: np.ndarray  # the validation cells' scores (sets both thresholds)
    quantile: float = CELL_QUANTILE

    @property
    def dims(self) -> int:
        return int(self.components.shape[1])

    @property
    def threshold(self) -> float:
        """The cell threshold: the `quantile` of the validation scores."""
        return float(np.quantile(self.val_scores, self.quantile))

    @property
    def set_aside_threshold(self) -> float:
        """The score beyond which field mode sets a cell aside, uncounted, for review: the highest of the validation
        cells' (`SET_ASIDE_QUANTILE`). Chosen against the 0.95 and 0.99 quantiles on the real-crop clips of the
        validation seeds 0-2 (`benchmarks/set_aside.py`): it lost the fewest heads for the debris it removed."""
        return float(np.quantile(self.val_scores, SET_ASIDE_QUANTILE))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of `features` (N x C) to the nearest class mean."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise SpermEdgeError(
                f"drift: features of shape {features.shape} do not fit the model's {self.mean.shape[0]} channels"
            )
        centred = features - self.mean
        z = centred @ self.components
        diff = z[:, None, :] - self.class_means[None, :, :]  # N x K x d
        d2 = np.maximum(np.einsum("nkd,de,nke->nk", diff, self.precision, diff).min(axis=1), 0.0)
        scale = float(self.residual_scale)
        if scale > 0:
            d2 = d2 + self.dims * self.residual2(centred) / scale
        return np.sqrt(d2)

    def residual2(self, centred: np.ndarray) -> np.ndarray:
        """Squared norm of what the projection drops from centred features."""
        return np.maximum((centred**2).sum(axis=1) - ((centred @ self.components) ** 2).sum(axis=1), 0.0)

    def run_threshold(self, n: int, runs: int = BOOTSTRAP_RUNS, seed: int = 0) -> float:
        """The median score above which a run of `n` cells warns (two-sample bootstrap on the validation scores)."""
        rng = np.random.default_rng(seed)
        m = len(self.val_scores)
        cells = rng.integers(0, m, size=(runs, min(max(1, n), MAX_BOOTSTRAP_CELLS)))
        whole = rng.integers(0, m, size=(runs, m))
        gap = np.median(self.val_scores[cells], axis=1) - np.median(self.val_scores[whole], axis=1)
        return float(np.median(self.val_scores) + np.quantile(gap, 1.0 - RUN_FALSE_ALARM))

    def summarize(self, scores: Sequence[float]) -> dict:
        """report.json's `drift`: {score, share_out, threshold, run_threshold, n, warning, method}."""
        scores = np.asarray([s for s in scores if s is not None], np.float64)
        n = len(scores)
        summary = {"method": METHOD, "n": n, "threshold": round(self.threshold, 4)}
        if n == 0:
            return {**summary, "score": None, "share_out": None, "run_threshold": None, "warning": False,
                    "note": "no cell was scored"}  # fmt: skip
        median = float(np.median(scores))
        run_threshold = self.run_threshold(n)
        summary.update(
            score=round(median, 4),
            share_out=round(float(np.mean(scores > self.threshold)), 4),
            run_threshold=round(run_threshold, 4),
            warning=bool(n >= MIN_CELLS and median > run_threshold),
        )
        if n < MIN_CELLS:
            summary["note"] = f"only {n} cells scored: no run-level verdict below {MIN_CELLS}"
        return summary

    def describe(self) -> dict:
        """The manifest's `drift` section (the file itself is listed in `files` with its sha256)."""
        return {
            "file": DRIFT_FILE,
            "method": METHOD,
            "features": int(self.mean.shape[0]),
            "dims": self.dims,
            "residual": float(self.residual_scale) > 0,
            "classes": int(self.class_means.shape[0]),
            "cell_threshold": round(self.threshold, 4),
            "cell_threshold_rule": f"{self.quantile:g} quantile of the validation cells' scores",
            "set_aside_threshold": round(self.set_aside_threshold, 4),
            "run_rule": (
                "warn when the run's median cell score exceeds the validation median by more than the 95th "
                f"percentile of {BOOTSTRAP_RUNS} bootstrap gaps (median of as many validation cells - median of a "
                "resample of the whole validation set): in-distribution false alarms ~5%"
            ),
            "run_threshold_200": round(self.run_threshold(200), 4),
            "validation_cells": int(len(self.val_scores)),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("wb") as fh:
            np.savez(fh, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> DriftModel:
        """Read a drift file (plain arrays only: `allow_pickle=False`)."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                arrays = {f.name: data[f.name] for f in fields(cls)}
        except (OSError, ValueError, KeyError) as err:
            raise SpermEdgeError(f"drift file {path} is unreadable or incomplete ({err})") from err
        arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
        arrays["quantile"] = float(arrays["quantile"])
        return cls(**arrays)


def _ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Covariance of centred rows `x`, shrunk towards mu*I by the Ledoit-Wolf (2004) optimal weight."""
    n, d = x.shape
    sample = x.T @ x / n
    mu = np.trace(sample) / d
    target = mu * np.eye(d)
    delta = np.sum((sample - target) ** 2) / d
    beta = min(delta, np.sum((np.einsum("ni,nj->nij", x, x) - sample) ** 2) / (n * n * d))
    weight = beta / delta if delta > 0 else 1.0
    return weight * target + (1.0 - weight) * sample


def fit_drift(
    train_features: np.ndarray,
    train_labels: Sequence[int],
    val_features: np.ndarray,
    dims: int = DEFAULT_DIMS,
    quantile: float = CELL_QUANTILE,
    residual: bool = True,
) -> DriftModel:
    """The drift model of the training features; the residual's scale and the thresholds set on the validation ones."""
    x = np.asarray(train_features, np.float64)
    labels = np.asarray(train_labels, np.int64)
    if x.ndim != 2 or len(x) != len(labels) or len(x) < 2:
        raise SpermEdgeError(f"drift: need N x C training features and N labels, got {x.shape}, {len(labels)}")
    if len(val_features) == 0:
        raise SpermEdgeError("drift: the thresholds need validation features, and none were given")
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    dims = int(min(dims, vt.shape[0]))
    components = vt[:dims].T
    z = (x - mean) @ components
    classes = np.unique(labels)
    class_means = np.stack([z[labels == c].mean(axis=0) for c in classes])
    centred = z - class_means[np.searchsorted(classes, labels)]
    precision = np.linalg.pinv(_ledoit_wolf(centred))
    val = np.asarray(val_features, np.float64)
    model = DriftModel(mean, components, class_means, precision, np.zeros(()), np.zeros(1), quantile)
    if residual:
        model.residual_scale = np.asarray(max(float(np.mean(model.residual2(val - mean))), 1e-12))
    model.val_scores = model.score(val)
    return model
