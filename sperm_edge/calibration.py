"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar T > 0 divides the logits before the softmax: the predicted class never changes, but a
confidence of 0.9 comes to mean right about 9 times in 10. T is fitted on the validation split
(never the test split) by minimising the negative log-likelihood, stored in the checkpoint and the
bundle (`temperature`), and applied by the runtime to every backend's logits before the flagging
rule reads the confidence.

numpy only: the classify-only runtime uses `calibrated_probs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.metrics import softmax

LOG_T_RANGE = (-3.0, 3.0)  # T between 0.05 and 20


def nll(logits: np.ndarray, labels: Sequence[int], temperature: float) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    scaled = np.asarray(logits, np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled).sum(axis=1))
    picked = scaled[np.arange(len(scaled)), np.asarray(labels, np.int64)]
    return float(np.mean(log_norm - picked))


def fit_temperature(logits: np.ndarray, labels: Sequence[int], tol: float = 1e-4) -> float:
    """The T minimising the NLL of `labels`: scipy's bounded scalar search on log T (the NLL is unimodal there)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise SpermEdgeError(f"temperature fitting needs N x K logits and N labels, got {logits.shape}, {len(labels)}")
    found = minimize_scalar(lambda log_t: nll(logits, labels, np.exp(log_t)), bounds=LOG_T_RANGE, method="bounded",
                            options={"xatol": tol})  # fmt: skip
    return float(np.exp(found.x))


def calibrated_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T): the probabilities every stage after the network reads."""
    if temperature <= 0:
        raise SpermEdgeError(f"temperature must be positive, not {temperature}")
    return softmax(np.asarray(logits, np.float32) / np.float32(temperature))
