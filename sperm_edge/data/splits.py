"""Seeded, stratified, duplicate-aware splits: scikit-learn's StratifiedGroupKFold over groups of identical pixels.

Images with identical pixels form one group, and a group is never split across train, validation and test
(SMIDS holds 49 such pairs, four of them across classes). StratifiedGroupKFold deals whole groups to folds so
that each fold keeps the class shares; a validation or test share is one of round(1 / share) such folds
(0.15: one seventh, 14.3%).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from sperm_edge.errors import SpermEdgeError


def group_ids(pixel_hashes: Sequence[str]) -> np.ndarray:
    """One integer per image; images with the same pixels share it."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(h, len(ids)) for h in pixel_hashes], dtype=np.int64)


def _folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """The held-out positions of each of k stratified folds of whole groups."""
    distinct = len(np.unique(groups))
    if distinct < k:
        raise SpermEdgeError(f"{distinct} distinct images cannot make {k} folds: the data set is too small")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class smaller than k is dealt as evenly as it can be: said, not warned
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return [held for _, held in splitter.split(np.zeros(len(labels)), labels, groups)]


def _hold_out(labels: np.ndarray, groups: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A mask of about `share` of the images (one fold of round(1 / share)), stratified, groups whole."""
    mask = np.zeros(len(labels), dtype=bool)
    # StratifiedGroupKFold refuses more folds than the largest class has images: a small set holds out more
    folds = max(2, min(round(1.0 / share), int(np.bincount(labels).max()), len(np.unique(groups))))
    mask[_folds(labels, groups, folds, seed)[0]] = True
    return mask


def train_val_test_split(
    labels: Sequence[int], hashes: Sequence[str], seed: int, val: float = 0.15, test: float = 0.15
) -> dict[str, list[int]]:
    """Indices for train / val / test."""
    labels, groups = np.asarray(labels), group_ids(hashes)
    is_test = _hold_out(labels, groups, test, seed)
    rest = np.flatnonzero(~is_test)
    is_val = _hold_out(labels[rest], groups[rest], val / (1.0 - test), seed + 1)
    return {"train": rest[~is_val].tolist(), "val": rest[is_val].tolist(), "test": np.flatnonzero(is_test).tolist()}


def kfold_splits(
    labels: Sequence[int], hashes: Sequence[str], k: int, seed: int, val: float = 0.15
) -> list[dict[str, list[int]]]:
    """k folds; fold i tests on the i-th StratifiedGroupKFold fold and holds out a validation share of the rest."""
    if k < 2:
        raise ValueError("k-fold needs k >= 2")
    labels, groups = np.asarray(labels), group_ids(hashes)
    splits = []
    for fold, test in enumerate(_folds(labels, groups, k, seed)):
        rest = np.setdiff1d(np.arange(len(labels)), test)
        is_val = _hold_out(labels[rest], groups[rest], val, seed + 1000 + fold)
        splits.append({"train": rest[~is_val].tolist(), "val": rest[is_val].tolist(), "test": sorted(test.tolist())})
    return splits
