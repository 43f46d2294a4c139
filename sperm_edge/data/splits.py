"""Seeded, stratified, duplicate-aware splits.

Images with identical pixels form one group, and a group is never split across train, validation
and test (SMIDS holds 49 such pairs, four of them across classes). Groups are dealt out per class
to the bucket furthest below its target share, which keeps every bucket stratified.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def group_ids(pixel_hashes: Sequence[str]) -> np.ndarray:
    """One integer per image; images with the same pixels share it."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(h, len(ids)) for h in pixel_hashes], dtype=np.int64)


def assign_buckets(labels: Sequence[int], groups: Sequence[int], shares: Sequence[float], seed: int) -> np.ndarray:
    """Bucket index per image: whole groups, stratified by each group's first label, seeded."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    shares = np.asarray(shares, dtype=np.float64) / np.sum(shares)
    rng = np.random.default_rng(seed)
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[int(group)].append(index)
    by_class: dict[int, list[int]] = defaultdict(list)
    for group, idx in members.items():
        by_class[int(labels[idx[0]])].append(group)
    bucket_of = np.empty(len(labels), dtype=np.int64)
    for cls in sorted(by_class):
        cls_groups = by_class[cls]
        rng.shuffle(cls_groups)
        total = sum(len(members[g]) for g in cls_groups)
        filled = np.zeros(len(shares))
        for group in cls_groups:
            deficit = shares * total - filled
            bucket = int(np.argmax(deficit))
            bucket_of[members[group]] = bucket
            filled[bucket] += len(members[group])
    return bucket_of


def train_val_test_split(
    labels: Sequence[int], hashes: Sequence[str], seed: int, val: float = 0.15, test: float = 0.15
) -> dict[str, list[int]]:
    """Indices for train / val / test."""
    buckets = assign_buckets(labels, group_ids(hashes), (1.0 - val - test, val, test), seed)
    return {name: np.flatnonzero(buckets == i).tolist() for i, name in enumerate(("train", "val", "test"))}


def kfold_splits(
    labels: Sequence[int], hashes: Sequence[str], k: int, seed: int, val: float = 0.15
) -> list[dict[str, list[int]]]:
    """k folds; fold i tests on bucket i and carves a stratified validation share out of the rest."""
    if k < 2:
        raise ValueError("k-fold needs k >= 2")
    groups = group_ids(hashes)
    folds = assign_buckets(labels, groups, [1.0] * k, seed)
    labels = np.asarray(labels)
    splits = []
    for fold in range(k):
        rest = np.flatnonzero(folds != fold)
        inner = assign_buckets(labels[rest], groups[rest], (1.0 - val, val), seed + 1000 + fold)
        splits.append(
            {
                "train": rest[inner == 0].tolist(),
                "val": rest[inner == 1].tolist(),
                "test": np.flatnonzero(folds == fold).tolist(),
            }
        )
    return splits
