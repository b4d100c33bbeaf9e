"""Train / validation / test split that is stratified by label and keeps duplicate groups together.

Paper Table 1 holds out 72 of 273 images (about 27 %) for testing. Here the test part takes
``test_fraction`` of EACH class, and a validation part takes ``val_fraction`` of what is left of
each class, so the class balance is the same in every part. Whole duplicate groups (see
``jaxmri.data.duplicates``) are assigned at once, so a copy of a training image never lands in the test
set; the fractions are therefore met to within about half of one group's size.

The split depends only on ``(labels, groups, fractions, seed)``: the same seed gives the same split.
"""

from __future__ import annotations

import numpy as np

PARTS = ("train", "val", "test")


def _group_labels(labels: np.ndarray, groups: np.ndarray) -> dict[int, int]:
    """Label of each group: its most common label (ties -> the smaller label)."""
    ids, group_index = np.unique(groups, return_inverse=True)
    classes, class_index = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(ids), len(classes)), np.int64)
    np.add.at(counts, (group_index, class_index), 1)
    return {int(g): int(c) for g, c in zip(ids, classes[counts.argmax(axis=1)])}


def _take(order: list[int], sizes: dict[int, int], target: int, minimum: int, keep: int) -> list[int]:
    """Pick groups from ``order`` until their image count is closest to ``target``.

    A group is taken while adding it leaves the total nearer to ``target`` than stopping would
    (``total + size / 2 <= target``); at least ``minimum`` groups are taken and at least ``keep`` are
    left for the other parts.
    """
    budget = len(order) - keep
    taken, total = [], 0
    for g in order:
        if len(taken) >= budget:
            break
        if total < target and total + sizes[g] / 2 <= target:
            taken.append(g)
            total += sizes[g]
    if len(taken) < minimum:
        chosen = set(taken)
        rest = [g for g in order if g not in chosen]
        taken += sorted(rest, key=lambda g: sizes[g])[: minimum - len(taken)]  # smallest: least overshoot
    return taken


def grouped_stratified_split(labels, groups, *, test_fraction: float = 0.27, val_fraction: float = 0.15,
                             seed: int = 0) -> dict[str, np.ndarray]:
    """Split image indices into ``{'train', 'val', 'test'}``.

    ``labels``, ``groups``: integer arrays of shape ``(N,)``; ``groups`` are duplicate-group ids.
    ``test_fraction`` in ``[0, 1)``: share of each class held out for testing. ``val_fraction`` in
    ``[0, 1)``: share of each class's REMAINING images used for validation (0 -> empty ``'val'``).
    Returns sorted ``int64`` index arrays that are disjoint and cover ``0..N-1``; each class has at
    least one group in every part whose fraction is positive. Raises ``ValueError`` when a class has
    too few groups for that.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if labels.ndim != 1 or groups.shape != labels.shape:
        raise ValueError(f"labels and groups must be 1-D arrays of the same length, got shapes "
                         f"{labels.shape} and {groups.shape}.")
    if labels.size and not (np.issubdtype(labels.dtype, np.integer) and np.issubdtype(groups.dtype, np.integer)):
        raise ValueError("labels and groups must be integer arrays (class indices and duplicate-group ids).")
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}.")

    rng = np.random.default_rng(seed)
    group_label = _group_labels(labels, groups)
    sizes = {int(g): int(c) for g, c in zip(*np.unique(groups, return_counts=True))}
    need_test, need_val = int(test_fraction > 0), int(val_fraction > 0)
    assignment: dict[int, str] = {}

    for cls in sorted(set(group_label.values())):
        class_groups = sorted(g for g, lab in group_label.items() if lab == cls)
        needed = 1 + need_test + need_val
        if len(class_groups) < needed:
            raise ValueError(
                f"class {cls} has only {len(class_groups)} distinct image group(s) (duplicates count once) "
                f"but the split needs {needed} (train{', val' if need_val else ''}{', test' if need_test else ''}); "
                "add images of this class or set test_fraction/val_fraction to 0."
            )
        order = [class_groups[i] for i in rng.permutation(len(class_groups))]
        n_images = sum(sizes[g] for g in order)
        test = _take(order, sizes, round(test_fraction * n_images), need_test, keep=1 + need_val)
        in_test = set(test)
        rest = [g for g in order if g not in in_test]
        n_rest = sum(sizes[g] for g in rest)
        val = _take(rest, sizes, round(val_fraction * n_rest), need_val, keep=1)
        for g in test:
            assignment[g] = "test"
        for g in val:
            assignment[g] = "val"
        for g in rest:
            assignment.setdefault(g, "train")

    part_of = np.array([assignment[int(g)] for g in groups], dtype=object)
    return {part: np.flatnonzero(part_of == part).astype(np.int64) for part in PARTS}


def grouped_subset(indices, labels, groups, fraction: float, *, seed: int = 0) -> np.ndarray:
    """About ``fraction`` of the images at ``indices``, taken per class in whole duplicate groups.

    Each class keeps at least one group. ``fraction`` 1 returns ``indices`` unchanged; the rest is
    sorted. The paper's Section 3.2 trains a U-Net on "a third of the data set" this way
    (``--train-fraction``). Depends only on its arguments: the same seed gives the same subset.
    """
    indices = np.asarray(indices, np.int64)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    if fraction == 1.0 or not len(indices):
        return indices
    labels, groups = np.asarray(labels)[indices], np.asarray(groups)[indices]
    rng = np.random.default_rng(seed)
    group_label = _group_labels(labels, groups)
    sizes = {int(g): int(c) for g, c in zip(*np.unique(groups, return_counts=True))}
    kept: set[int] = set()
    for cls in sorted(set(group_label.values())):
        class_groups = sorted(g for g, lab in group_label.items() if lab == cls)
        order = [class_groups[i] for i in rng.permutation(len(class_groups))]
        target = round(fraction * sum(sizes[g] for g in order))
        kept.update(_take(order, sizes, target, minimum=1, keep=0))
    return np.sort(indices[np.isin(groups, list(kept))])
