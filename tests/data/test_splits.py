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


def reference_buckets(labels: np.ndarray, groups: np.ndarray, shares: tuple[float, ...], seed: int) -> np.ndarray:
    """The former dealer: whole groups, per class, to the bucket furthest below its target share."""
    shares_arr = np.asarray(shares) / np.sum(shares)
    rng = np.random.default_rng(seed)
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(int(group), []).append(index)
    by_class: dict[int, list[int]] = {}
    for group, idx in members.items():
        by_class.setdefault(int(labels[idx[0]]), []).append(group)
    bucket_of = np.empty(len(labels), dtype=np.int64)
    for cls in sorted(by_class):
        cls_groups = by_class[cls]
        rng.shuffle(cls_groups)
        total = sum(len(members[g]) for g in cls_groups)
        filled = np.zeros(len(shares_arr))
        for group in cls_groups:
            bucket = int(np.argmax(shares_arr * total - filled))
            bucket_of[members[group]] = bucket
            filled[bucket] += len(members[group])
    return bucket_of


def _worst_class_error(labels: np.ndarray, held: np.ndarray, share: float) -> float:
    """The largest |held-out count - expected count| over classes."""
    counts, totals = np.bincount(labels[held], minlength=labels.max() + 1), np.bincount(labels)
    return float(np.max(np.abs(counts - share * totals)))


def test_kfold_is_as_stratified_as_the_former_dealer() -> None:
    """scikit-learn's StratifiedGroupKFold replaced the hand-written dealer: on sets shaped like HuSHeM (216 crops,
    4 classes) and SMIDS (3000, 3 classes, some duplicate pairs), every fold is within one image per class of the
    dealer's stratification, and groups stay whole."""
    rng = np.random.default_rng(0)
    for n, classes, seeds in ((216, 4, 3), (3000, 3, 1)):
        labels = rng.integers(0, classes, n)
        hashes = [f"h{i}" for i in range(n)]
        for a in rng.choice(n, 50, replace=False):  # duplicate pairs, some across classes
            hashes[int(rng.integers(0, n))] = hashes[a]
        groups = group_ids(hashes)
        for seed in range(seeds):
            old = reference_buckets(labels, groups, (1.0,) * 5, seed)
            folds = kfold_splits(labels, hashes, k=5, seed=seed)
            for fold, split in enumerate(folds):
                test = np.asarray(split["test"])
                new_error = _worst_class_error(labels, test, 0.2)
                old_error = _worst_class_error(labels, np.flatnonzero(old == fold), 0.2)
                assert new_error <= max(old_error, 1.0) + 1.0, (n, seed, fold, new_error, old_error)
                assert len(set(groups[test]) & set(groups[split["train"] + split["val"]])) == 0
                assert abs(len(split["val"]) / (n - len(test)) - 1 / 7) < 0.02  # 0.15 -> one of 7 folds
