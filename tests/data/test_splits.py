from __future__ import annotations

import numpy as np

from sperm_edge.data.splits import group_ids, kfold_splits, train_val_test_split


def _planted(n_per_class: int = 30, classes: int = 3) -> tuple[list[int], list[str]]:
    labels = [c for c in range(classes) for _ in range(n_per_class)]
    hashes = [f"img{i}" for i in range(len(labels))]
    for a, b in [(0, 1), (2, 40), (5, 70), (31, 32), (61, 89)]:  # (2, 40), (5, 70): pairs across classes
        hashes[b] = hashes[a]
    return labels, hashes


def _side_of(split: dict[str, list[int]]) -> dict[int, str]:
    return {i: name for name, idx in split.items() for i in idx}


def test_duplicates_never_straddle_train_val_test() -> None:
    labels, hashes = _planted()
    for seed in range(10):
        split = train_val_test_split(labels, hashes, seed)
        assert sorted(i for idx in split.values() for i in idx) == list(range(len(labels)))
        side = _side_of(split)
        for a, b in [(0, 1), (2, 40), (5, 70), (31, 32), (61, 89)]:
            assert side[a] == side[b]


def test_split_is_stratified_and_seeded() -> None:
    labels, hashes = _planted()
    split = train_val_test_split(labels, hashes, seed=3)
    assert split == train_val_test_split(labels, hashes, seed=3)
    assert split != train_val_test_split(labels, hashes, seed=4)
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        counts = np.bincount(np.asarray(labels)[split[name]], minlength=3)
        assert np.all(np.abs(counts - share * 30) <= 2), (name, counts)


def test_kfold_tests_every_image_once_and_keeps_groups_whole() -> None:
    labels, hashes = _planted()
    folds = kfold_splits(labels, hashes, k=5, seed=0)
    tested = sorted(i for fold in folds for i in fold["test"])
    assert tested == list(range(len(labels)))
    groups = group_ids(hashes)
    for fold in folds:
        side = _side_of(fold)
        assert len(side) == len(labels)
        for g in np.unique(groups):
            assert len({side[i] for i in np.flatnonzero(groups == g)}) == 1
