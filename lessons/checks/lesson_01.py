"""Checkers for lesson 1 (the data pipeline): each recomputes the answer its own way and compares."""

import numpy as np

from checks import expect, expect_close, ok
from jaxmri.data.crop import brain_box
from jaxmri.data.duplicates import perceptual_hash
from jaxmri.data.images import read_image, to_gray
from jaxmri.data.split import grouped_stratified_split

FACTORS = tuple(round(0.05 * k, 2) for k in range(20, 0, -1))  # 1.0, 0.95, ..., 0.05


def _leaks(train, test, groups) -> int:
    """Test images that share a group with some training image (a set, not np.isin)."""
    seen = {int(groups[i]) for i in train}
    return sum(int(groups[i]) in seen for i in test)


def check_exact_only_leak(data, mean_leaked: float, seeds: int = 200) -> None:
    """Mean, over ``seeds`` seeds, of the test images that have a perceptual copy (``data.groups``) in the
    training part when the split groups by byte-identity only (``data.exact_groups``) (exercise 1)."""
    counts = []
    for seed in range(seeds):
        parts = grouped_stratified_split(data.labels, data.exact_groups, test_fraction=0.27, val_fraction=0.0,
                                         seed=seed)
        counts.append(_leaks(parts["train"], parts["test"], data.groups))
    want = float(np.mean(counts))
    expect(abs(float(mean_leaked) - want) < 1e-9, 1,
           f"you give {float(mean_leaked):.3f}; split with data.exact_groups (test_fraction=0.27, val_fraction=0, "
           f"seeds 0..{seeds - 1}) and count leaks with the perceptual groups data.groups")
    ok(1, f"byte-identity groups still leak {want:.2f} test images per split on average (max {max(counts)})")


def check_dark_box(image, factor: float) -> None:
    """``factor``: the largest of 1.0, 0.95, ..., 0.05 at which ``brain_box((image * factor).astype(uint8))``
    gives up and returns the whole image (exercise 2)."""
    image = np.asarray(image)
    height, width = image.shape[:2]
    whole = (0, 0, width, height)
    expect(round(float(factor), 2) in FACTORS, 2, f"{factor} is not one of the factors 1.0, 0.95, ..., 0.05")
    boxes = {f: tuple(int(v) for v in brain_box((image * f).astype(np.uint8))) for f in FACTORS}
    expect(boxes[round(float(factor), 2)] == whole, 2,
           f"at factor {factor} brain_box still finds a head: {boxes[round(float(factor), 2)]}, not {whole}")
    brighter = [f for f in FACTORS if f > float(factor) and boxes[f] == whole]
    expect(not brighter, 2, f"brain_box already returns the whole image at factor {max(brighter, default=0)}; "
                            "scan from 1.0 downwards and stop at the first whole-image box")
    bright = min(f for f in FACTORS if f > float(factor)) if float(factor) < 1.0 else None
    note = f"at {bright} it still finds the head at {boxes[bright]}" if bright else "even the original has no head"
    ok(2, f"at factor {factor} brain_box keeps the whole {width}x{height} image; {note}")


def _hash_neighbour_accuracy(hashes: np.ndarray, labels: np.ndarray, train, test) -> float:
    distance = np.bitwise_count(hashes[test][:, None] ^ hashes[train][None, :])  # (test, train) bit counts
    predicted = labels[np.asarray(train)[np.argmin(distance, axis=1)]]
    return float(np.mean(predicted == labels[test]))


def check_hash_neighbour(data, random_accuracy: float, grouped_accuracy: float, seeds: int = 10) -> None:
    """Mean test accuracies over ``seeds`` seeds of 1-nearest-neighbour on perceptual hashes, with a random
    split (the first ``round(0.27 N)`` of ``default_rng(seed).permutation(N)`` are test) and with
    ``grouped_stratified_split(..., test_fraction=0.27, val_fraction=0, seed=seed)`` (exercise 3)."""
    hashes = np.array([perceptual_hash(to_gray(read_image(data.root / p))) for p in data.paths], np.uint64)
    labels = np.asarray(data.labels)
    n = len(labels)
    n_test = round(0.27 * n)
    random, grouped = [], []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(n)
        random.append(_hash_neighbour_accuracy(hashes, labels, order[n_test:], order[:n_test]))
        parts = grouped_stratified_split(labels, data.groups, test_fraction=0.27, val_fraction=0.0, seed=seed)
        grouped.append(_hash_neighbour_accuracy(hashes, labels, parts["train"], parts["test"]))
    hint = ("1-NN: each test image gets the label of the training image with the fewest differing pHash bits "
            f"(ties: the first, np.argmin); average over seeds 0..{seeds - 1}")
    expect_close(random_accuracy, np.mean(random), 3, f"random-split accuracy ({hint})", atol=1e-9)
    expect_close(grouped_accuracy, np.mean(grouped), 3, f"grouped-split accuracy ({hint})", atol=1e-9)
    ok(3, f"pHash 1-NN test accuracy: random split {np.mean(random):.3f}, grouped split {np.mean(grouped):.3f}")
