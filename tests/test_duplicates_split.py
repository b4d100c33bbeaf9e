"""Duplicate groups (exact + perceptual) and the grouped, stratified, seeded split."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmri.data.duplicates import (NEAR_DUPLICATE_DISTANCE, content_hash, count_groups, duplicate_groups,
                                    hamming_distance, perceptual_hash)
from jaxmri.data.images import to_gray
from jaxmri.data.phantom import make_phantom
from jaxmri.data.split import grouped_stratified_split

# ---------------------------------------------------------------- hashes


def test_content_hash_is_sha256_hex():
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(content_hash(b"")) == 64
    assert content_hash(b"abc") != content_hash(b"abd")


@pytest.fixture(scope="module")
def phantom_grays():
    images, _, _ = make_phantom(6, 6, seed=11)
    return [to_gray(image) for image in images]


def test_perceptual_hash_is_a_64_bit_int(phantom_grays):
    for gray in phantom_grays:
        value = perceptual_hash(gray)
        assert isinstance(value, int) and 0 <= value < 2**64
        assert perceptual_hash(gray.copy()) == value


def test_resized_and_recompressed_copies_stay_within_the_threshold(phantom_grays):
    for gray in phantom_grays:
        h = perceptual_hash(gray)
        half = cv2.resize(gray, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
        double = cv2.resize(gray, None, fx=1.7, fy=1.5, interpolation=cv2.INTER_CUBIC)
        jpeg = cv2.imdecode(cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_GRAYSCALE)
        brighter = np.clip(gray.astype(int) * 1.2 + 5, 0, 255).astype(np.uint8)
        for copy in (half, double, jpeg, brighter):
            assert hamming_distance(h, perceptual_hash(copy)) <= NEAR_DUPLICATE_DISTANCE


def test_different_phantoms_are_further_apart_than_the_threshold(phantom_grays):
    hashes = [perceptual_hash(g) for g in phantom_grays]
    distances = [hamming_distance(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert min(distances) > NEAR_DUPLICATE_DISTANCE


def test_perceptual_hash_rejects_non_2d():
    with pytest.raises(ValueError, match="gray"):
        perceptual_hash(np.zeros((8, 8, 3), np.uint8))


def test_hamming_distance():
    assert hamming_distance(0, 0) == 0
    assert hamming_distance(0b1011, 0b0001) == 2
    assert hamming_distance(2**64 - 1, 0) == 64


# ---------------------------------------------------------------- groups


def test_exact_groups_only_with_negative_distance():
    groups = duplicate_groups(["a", "b", "a", "c", "b"], [0, 0, 0, 0, 0], max_distance=-1)
    assert groups.dtype == np.int32
    np.testing.assert_array_equal(groups, [0, 1, 0, 2, 1])  # numbered by first appearance


def test_threshold_is_inclusive():
    at = (1 << NEAR_DUPLICATE_DISTANCE) - 1  # exactly NEAR_DUPLICATE_DISTANCE bits set
    beyond = (1 << (NEAR_DUPLICATE_DISTANCE + 1)) - 1
    np.testing.assert_array_equal(duplicate_groups(["a", "b"], [0, at]), [0, 0])
    np.testing.assert_array_equal(duplicate_groups(["a", "b"], [0, beyond]), [0, 1])
    stricter = duplicate_groups(["a", "b"], [0, at], max_distance=NEAR_DUPLICATE_DISTANCE - 1)
    np.testing.assert_array_equal(stricter, [0, 1])


def test_groups_chain_through_exact_and_near_links():
    far = 2**64 - 1
    # 0~1 by bytes, 1~2 by hash (distance 1), 2~3 by hash, 4 alone, 5 = bytes of 4.
    groups = duplicate_groups(["x", "x", "y", "z", "w", "w"], [far, 0, 1, 3, 2**40 - 1, (2**40 - 1) << 24])
    np.testing.assert_array_equal(groups, [0, 0, 0, 0, 1, 1])
    assert count_groups(groups) == (2, 2, 6)


def test_groups_edge_cases():
    assert duplicate_groups([], []).shape == (0,)
    np.testing.assert_array_equal(duplicate_groups(["a"], [5]), [0])
    with pytest.raises(ValueError, match="perceptual"):
        duplicate_groups(["a", "b"], [1])


# ---------------------------------------------------------------- split


def _check_split(split, labels, groups, test_fraction, val_fraction):
    n = len(labels)
    assert set(split) == {"train", "val", "test"}
    joined = np.concatenate([split["train"], split["val"], split["test"]])
    assert np.array_equal(np.sort(joined), np.arange(n))  # disjoint and covering
    for part, idx in split.items():
        assert np.array_equal(idx, np.sort(idx)) and np.issubdtype(idx.dtype, np.integer)
    part_of = np.empty(n, object)
    for part, idx in split.items():
        part_of[idx] = part
    for g in np.unique(groups):
        assert len(set(part_of[groups == g])) == 1, f"group {g} crosses the split"
    for cls in np.unique(labels):
        in_class = labels == cls
        biggest = np.bincount(groups[in_class]).max()
        for part, fraction in (("test", test_fraction), ("val", val_fraction)):
            count = np.sum(in_class[split[part]])
            if fraction > 0:
                assert count >= 1
            else:
                assert count == 0
        n_test = np.sum(in_class[split["test"]])
        # Whole groups are assigned, so the share is met to within one group's size.
        assert abs(n_test - test_fraction * in_class.sum()) <= biggest + 1
        rest = in_class.sum() - n_test
        assert abs(np.sum(in_class[split["val"]]) - val_fraction * rest) <= biggest + 1
        assert np.sum(in_class[split["train"]]) >= 1


@st.composite
def labelled_groups(draw):
    """Random datasets: 2-3 classes, each with 3-40 groups of 1-4 images, ids shuffled."""
    labels, groups = [], []
    next_id = 0
    for cls in range(draw(st.integers(2, 3))):
        for size in draw(st.lists(st.integers(1, 4), min_size=3, max_size=40)):
            labels += [cls] * size
            groups += [next_id] * size
            next_id += 1
    order = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(len(labels))
    return np.array(labels)[order], np.array(groups)[order] * 7 + 3  # ids need not be 0..G-1


@settings(max_examples=150, deadline=None)
@given(labelled_groups(), st.sampled_from([0.0, 0.2, 0.27, 0.5]), st.sampled_from([0.0, 0.15, 0.3]),
       st.integers(0, 1000))
def test_split_properties(data, test_fraction, val_fraction, seed):
    labels, groups = data
    split = grouped_stratified_split(labels, groups, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    _check_split(split, labels, groups, test_fraction, val_fraction)
    again = grouped_stratified_split(labels, groups, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    for part in split:
        np.testing.assert_array_equal(split[part], again[part])


def test_split_is_deterministic_per_seed_and_changes_with_it():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    groups = np.arange(300) // 2
    labels = labels[groups * 2]  # groups hold one label
    splits = [grouped_stratified_split(labels, groups, seed=s) for s in (0, 0, 1)]
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(splits[0][part], splits[1][part])
    assert not np.array_equal(splits[0]["test"], splits[2]["test"])


def test_default_fractions_match_the_paper_scale():
    labels = np.array([1] * 155 + [0] * 98)
    split = grouped_stratified_split(labels, np.arange(253), seed=0)
    assert [int(np.sum(labels[split["test"]] == c)) for c in (0, 1)] == [26, 42]  # 0.27 of 98, of 155
    assert len(split["test"]) == 68  # paper Table 1: 72 of 273
    assert [int(np.sum(labels[split["val"]] == c)) for c in (0, 1)] == [11, 17]  # 0.15 of the rest


def test_mixed_label_group_follows_its_majority():
    labels = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 0, 1])
    groups = np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    for seed in range(20):
        split = grouped_stratified_split(labels, groups, test_fraction=0.3, val_fraction=0.2, seed=seed)
        assert any({0, 1, 2} <= set(idx.tolist()) for idx in split.values())  # group 0 kept whole


def test_too_few_groups_is_a_clear_error():
    labels = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array([0, 0, 1, 2, 3, 4])  # class 0 has only 2 groups
    with pytest.raises(ValueError, match=r"class 0 has only 2 distinct image group\(s\).*needs 3"):
        grouped_stratified_split(labels, groups)
    split = grouped_stratified_split(labels, groups, val_fraction=0.0)
    assert len(split["val"]) == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(test_fraction=1.0), "test_fraction"),
    (dict(val_fraction=-0.1), "val_fraction"),
])
def test_bad_fractions(kwargs, match):
    with pytest.raises(ValueError, match=match):
        grouped_stratified_split(np.zeros(10, int), np.arange(10), **kwargs)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same length"):
        grouped_stratified_split(np.zeros(10, int), np.arange(9))
