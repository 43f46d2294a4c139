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
- the run rule, a one-sided two-sample rank test (Mann-Whitney U) of the run's cell scores against
  the validation cells': warn when p < `RUN_FALSE_ALARM` (0.05), i.e. when cells like the
  validation ones would rank this far above them in under 5% of runs. A rank test's level is exact
  whenever the run's cells and the validation cells come from one distribution, whatever its shape
  and however few validation cells there are (25 for a HuSHeM fold), and its null spread carries
  both samples' sizes. The bootstrap test of medians it replaces (the run's median against the
  validation median plus bootstrap gaps) under-covered with 25 validation cells: runs of 20
  distinct HuSHeM test cells warned 6.4% of the time over the 5 folds (25.6% on one). Fewer
  than 5 cells get no verdict.

Field mode asks the run question differently. Cells cut from a field are not the scanned crops of a
training set: turned to any angle, cut by the localiser, their neighbours painted out, stained and
focused as that slide was. Even against the field-cut reference (`export.drift`), the training
lab's own heads on real-crop clips lay beyond the field threshold (the 0.95 quantile of the
validation crops' field scores) far more often than 5%, and the rank test warned on every such
clip. So a field run warns when significantly more than `FIELD_TOLERATED_SHARE` of its heads lie
beyond the field threshold (one-sided binomial test, p < `RUN_FALSE_ALARM`); cells the head verifier
set aside are not heads and are left out (`runtime.drift.run_drift`). The share was chosen on the
validation clips (`data real-field`, plain look, seeds 0-2, both sets) with the standard-flow
bundles: of 0.2-0.5, the one with the largest worst-case margin to both bars, <= 5% false alarms on
the own lab's clips and >= 90% warnings on the other lab's, for runs of 40 heads whose true share is
each clip's. Own-lab shares were 0.30-0.39 (HuSHeM) and 0.02-0.17 (SMIDS), the other lab's
0.79-0.84 (SMIDS bundle on HuSHeM clips) and 1.00 (the reverse): 0.4 would give up to 3.4% false
alarms, 0.5 0.1%, with 98.6% warnings on the other lab's clips.

`dims` (64) was chosen on validation data: the own validation crops against copies with synthetic
lab shifts (hue, gamma, greyscale, blur), best mean AUROC of 16 / 32 / 64 dims, with and without
the residual, and the energy score (`benchmarks/drift.py`).

Stored in the bundle as `drift.npz` (plain arrays, read with `allow_pickle=False`). numpy only:
the classify-only runtime scores cells with it.
"""

from __future__ import annotations

import math
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
RUN_FALSE_ALARM = 0.05  # the run rule's level: p below this warns
MIN_CELLS = 5  # fewer cells than this: no run-level verdict
FIELD_TOLERATED_SHARE = 0.5  # field mode: a run warns when significantly more of its heads lie beyond the threshold


@dataclass
class DriftModel:
    """PCA projection, class means and shared precision in the projected space, and the validation scores."""

    mean: np.ndarray  # C: the training features' mean
    components: np.ndarray  # C x d: the principal axes
    class_means: np.ndarray  # K x d
    precision: np.ndarray  # d x d: inverse of the shrunk shared covariance
    residual_scale: np.ndarray  # the validation crops' mean squared residual (0: residual not used)
    val_scores: np.ndarray  # the validation crops' scores as they are (crop mode's thresholds)
    quantile: float = CELL_QUANTILE
    field_val_scores: np.ndarray | None = None  # the validation crops as field mode cuts them (field mode's)

    @property
    def dims(self) -> int:
        return int(self.components.shape[1])

    def reference(self, field: bool = False) -> np.ndarray:
        """The validation scores a run is compared with: as field mode cuts the crops (`field`, when the model
        has them; bundles exported before carry only the crops as they are), or as they are."""
        if field and self.field_val_scores is not None and np.size(self.field_val_scores):
            return np.asarray(self.field_val_scores)
        return self.val_scores

    @property
    def threshold(self) -> float:
        """The cell threshold: the `quantile` of the validation scores."""
        return float(np.quantile(self.val_scores, self.quantile))

    @property
    def field_threshold(self) -> float:
        """The cell threshold of field mode: the `quantile` of the field-cut validation crops' scores."""
        return float(np.quantile(self.reference(field=True), self.quantile))

    @property
    def set_aside_threshold(self) -> float:
        """The score beyond which field mode sets a cell aside, uncounted, for review: the highest of the validation
        cells' (`SET_ASIDE_QUANTILE`), as field mode cuts them. Chosen against the 0.95 and 0.99 quantiles on the
        real-crop clips of the validation seeds 0-2 (`benchmarks/set_aside.py`): it lost the fewest heads for the
        debris it removed."""
        return float(np.quantile(self.reference(field=True), SET_ASIDE_QUANTILE))

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

    def run_p_value(self, scores: np.ndarray) -> np.ndarray:
        """p of the run rule for each run along the last axis of `scores` (a run, or a stack of runs): one-sided
        Mann-Whitney U of the run's cell scores against the validation cells' (small p: the run ranks high).

        U counts the (run cell, validation cell) pairs the run's cell wins, a tie as half; p is its normal
        approximation with the continuity correction, as `scipy.stats.mannwhitneyu(..., alternative="greater",
        method="asymptotic")` gives it for untied scores (that is not imported here: scipy.stats is heavy)."""
        scores = np.asarray(scores, np.float64)
        reference = np.sort(self.val_scores)
        m, n = scores.shape[-1], len(reference)
        below = np.searchsorted(reference, scores, side="left")
        ties = np.searchsorted(reference, scores, side="right") - below
        u = (below + 0.5 * ties).sum(axis=-1)
        z = (u - m * n / 2 - 0.5) / np.sqrt(m * n * (m + n + 1) / 12)
        return np.asarray(0.5 * np.vectorize(math.erfc)(z / math.sqrt(2)))

    def field_p_value(self, scores: np.ndarray) -> float:
        """p of the field run rule: one-sided binomial test that more than `FIELD_TOLERATED_SHARE` of the cells
        lie beyond the cell threshold (the upper tail P(X >= k) of Binomial(n, FIELD_TOLERATED_SHARE))."""
        scores = np.asarray(scores, np.float64)
        n, k = len(scores), int(np.sum(scores > self.field_threshold))
        t = FIELD_TOLERATED_SHARE
        return float(min(1.0, sum(math.comb(n, i) * t**i * (1 - t) ** (n - i) for i in range(k, n + 1))))

    def run_warns(self, scores: np.ndarray) -> np.ndarray:
        """The run rule's verdict for each run along the last axis of `scores`: at least `MIN_CELLS` cells and
        p below `RUN_FALSE_ALARM`."""
        scores = np.asarray(scores, np.float64)
        return (scores.shape[-1] >= MIN_CELLS) & (self.run_p_value(scores) < RUN_FALSE_ALARM)

    def summarize(self, scores: Sequence[float], field: bool = False) -> dict:
        """report.json's `drift`: {score (the median cell score), share_out, threshold, validation_score (the
        validation cells' median), p_value (the run rule's), n, warning, method, rule}; `field`: the field
        rule (`field_p_value`) instead of the rank test."""
        scores = np.asarray([s for s in scores if s is not None], np.float64)
        n = len(scores)
        rule = "field-share" if field else "rank"
        threshold = self.field_threshold if field else self.threshold
        summary = {"method": METHOD, "rule": rule, "n": n, "threshold": round(threshold, 4)}
        if field:
            summary["tolerated_share"] = FIELD_TOLERATED_SHARE
        if n == 0:
            return {**summary, "score": None, "share_out": None, "validation_score": None, "p_value": None,
                    "warning": False, "note": "no cell was scored"}  # fmt: skip
        p_value = self.field_p_value(scores) if field else float(self.run_p_value(scores))
        summary.update(
            score=round(float(np.median(scores)), 4),
            share_out=round(float(np.mean(scores > threshold)), 4),
            validation_score=round(float(np.median(self.reference(field))), 4),
            p_value=float(f"{p_value:.4g}"),
            warning=bool(n >= MIN_CELLS and p_value < RUN_FALSE_ALARM),
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
            "field_cell_threshold": round(self.field_threshold, 4),
            "set_aside_threshold": round(self.set_aside_threshold, 4),
            "run_rule": (
                "warn when a one-sided Mann-Whitney U test of the run's cell scores against the validation "
                f"cells' gives p < {RUN_FALSE_ALARM:g}: in-distribution false alarms at most {RUN_FALSE_ALARM:.0%}"
            ),
            "field_run_rule": (
                f"field mode: warn when significantly more than {FIELD_TOLERATED_SHARE:.0%} of the heads lie beyond "
                f"the cell threshold (one-sided binomial test, p < {RUN_FALSE_ALARM:g})"
            ),
            "validation_cells": int(len(self.val_scores)),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}
        with path.open("wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DriftModel:
        """Read a drift file (plain arrays only: `allow_pickle=False`)."""
        optional = {"field_val_scores"}  # drift files written before field mode had its own reference lack it
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                arrays = {f.name: data[f.name] for f in fields(cls) if f.name in data.files or f.name not in optional}
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
    field_val: np.ndarray | None = None,
    views: int = 1,
) -> DriftModel:
    """The drift model of the training features; the residual's scale and the thresholds set on the validation ones.

    `field_val`: the validation crops as field mode cuts them, each in `views` views, view-major (all crops in
    the first view, then the second...): a crop's field score is the median of its views' scores."""
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
    if field_val is not None:
        scores = model.score(np.asarray(field_val, np.float64))
        if len(scores) % views:
            raise SpermEdgeError(f"drift: {len(scores)} field validation features are not {views} views of each crop")
        model.field_val_scores = np.median(scores.reshape(views, -1), axis=0)
    return model
