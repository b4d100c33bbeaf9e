"""Grouped, stratified k-fold: every image is tested exactly once, duplicate groups never straddle folds.

Each duplicate group (``jaxmri.data.duplicates``) takes its majority label; per class, groups are
shuffled with the seed and each goes, largest first, to the fold that holds the fewest images of that
class so far (ties to the fold with fewer images overall, then the lower fold number). So every fold's
class balance is close to the whole set's, and a copy of a test image is never in that fold's training
part. The folds depend only on ``(labels, groups, k, seed)``.
"""

import numpy as np

from jaxmri.data.split import _group_labels, grouped_stratified_split


def grouped_stratified_folds(labels, groups, k: int, *, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint, sorted int64 index arrays covering ``0..N-1`` (fold i = the test images of round i).

    Raises ``ValueError`` when ``k < 2`` or a class has fewer than ``k`` distinct groups (some fold
    would then have no image of that class).
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if k < 2:
        raise ValueError(f"--folds must be at least 2, got {k}.")
    group_label = _group_labels(labels, groups)
    sizes = dict(zip(*(a.tolist() for a in np.unique(groups, return_counts=True))))
    rng = np.random.default_rng(seed)
    fold_of, per_class, per_fold = {}, {}, np.zeros(k, np.int64)
    for cls in sorted(set(group_label.values())):
        members = sorted(g for g, lab in group_label.items() if lab == cls)
        if len(members) < k:
            raise ValueError(f"class {cls} has only {len(members)} distinct image group(s) (duplicates count once), "
                             f"fewer than --folds {k}; lower --folds.")
        members = [members[i] for i in rng.permutation(len(members))]
        members.sort(key=lambda g: -sizes[g])  # stable: random order within one size
        counts = per_class.setdefault(cls, np.zeros(k, np.int64))
        for g in members:
            fold = min(range(k), key=lambda f: (counts[f], per_fold[f], f))
            fold_of[g] = fold
            counts[fold] += sizes[g]
            per_fold[fold] += sizes[g]
    assigned = np.array([fold_of[int(g)] for g in groups], np.int64)
    return [np.flatnonzero(assigned == f).astype(np.int64) for f in range(k)]


def fold_split(labels, groups, folds: list[np.ndarray], fold: int, *, val_fraction: float,
               seed: int) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` for round ``fold``: test = that fold; validation carved (grouped and
    stratified, ``val_fraction`` of each class) from the other folds only; the rest trains."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    test = folds[fold]
    rest = np.sort(np.concatenate([f for i, f in enumerate(folds) if i != fold]))
    inner = grouped_stratified_split(labels[rest], groups[rest], test_fraction=0.0, val_fraction=val_fraction,
                                     seed=seed)
    return {"train": rest[inner["train"]], "val": rest[inner["val"]], "test": test}
