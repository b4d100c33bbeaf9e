"""The phantom generator: shapes, masks, determinism, speed, files on disk, and learnability."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from jaxmri.data.crop import brain_box, crop_resize
from jaxmri.data.images import read_image, to_gray
from jaxmri.data.phantom import make_phantom, write_phantom_dataset


@pytest.fixture(scope="module")
def phantoms():
    return make_phantom(8, 6, seed=0)


def test_shapes_dtypes_and_labels(phantoms):
    images, labels, masks = phantoms
    assert len(images) == len(masks) == 14
    assert labels.dtype == np.int32 and labels.tolist() == [1] * 8 + [0] * 6
    for image, mask in zip(images, masks):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
        assert 160 <= image.shape[0] <= 320 and 160 <= image.shape[1] <= 320
    assert len({image.shape for image in images}) > 5  # sizes vary


def test_masks_are_binary_nonempty_for_tumors_and_empty_otherwise(phantoms):
    images, labels, masks = phantoms
    for image, label, mask in zip(images, labels, masks):
        assert set(np.unique(mask)) <= {0, 1}
        if label == 1:
            x0, y0, x1, y1 = brain_box(image)
            assert 0.005 < mask.sum() / ((x1 - x0) * (y1 - y0)) < 0.25  # share of the brain crop
            gray = to_gray(image)
            assert gray[mask == 1].mean() > gray[(mask == 0) & (gray > 60)].mean() + 50  # tumors are bright
        else:
            assert mask.sum() == 0


def test_background_is_dark_with_a_brain_in_the_middle(phantoms):
    images, _, _ = phantoms
    for image in images:
        gray = to_gray(image)
        assert np.median(gray[:3]) < 20 and np.median(gray[-3:]) < 20  # top and bottom rows
        x0, y0, x1, y1 = brain_box(image)
        assert gray[y0:y1, x0:x1].mean() > 1.2 * gray.mean()  # the crop drops dark background


def test_deterministic_per_seed_and_prefix_stable():
    a_images, a_labels, a_masks = make_phantom(3, 2, seed=4)
    b_images, _, b_masks = make_phantom(3, 2, seed=4)
    for x, y in zip(a_images + a_masks, b_images + b_masks):
        np.testing.assert_array_equal(x, y)
    more_images, _, _ = make_phantom(5, 4, seed=4)
    np.testing.assert_array_equal(more_images[0], a_images[0])  # first tumor image
    np.testing.assert_array_equal(more_images[5], a_images[3])  # first healthy image
    other, _, _ = make_phantom(3, 2, seed=5)
    assert other[0].shape != a_images[0].shape or not np.array_equal(other[0], a_images[0])


def test_size_range_and_bad_arguments():
    images, _, _ = make_phantom(2, 2, seed=1, size_range=(64, 64))
    assert all(image.shape == (64, 64, 3) for image in images)
    with pytest.raises(ValueError, match="non-negative"):
        make_phantom(-1, 2)
    with pytest.raises(ValueError, match="size_range"):
        make_phantom(1, 1, size_range=(100, 50))


def test_generation_is_fast():
    start = time.perf_counter()
    make_phantom(30, 20, seed=2)
    assert time.perf_counter() - start < 2.0


def _histogram_features(images):
    """16-bin gray histogram of each brain crop: a deliberately weak, position-free feature."""
    crops = [crop_resize(to_gray(im), brain_box(im), 32) for im in images]
    return np.array([np.histogram(c, bins=16, range=(0, 256))[0] / c.size for c in crops])


def test_learnability_proxy_linear_model_on_histograms():
    """If a logistic regression on 16 histogram bins separates fresh phantoms, a CNN can too."""
    train_images, train_labels, _ = make_phantom(30, 30, seed=0)
    test_images, test_labels, _ = make_phantom(20, 20, seed=100)
    x, x_test = _histogram_features(train_images), _histogram_features(test_images)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, x_test = (x - mean) / std, (x_test - mean) / std
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(500):  # full-batch gradient descent on the logistic loss
        grad = 1 / (1 + np.exp(-(x @ w + b))) - train_labels
        w -= 0.5 * (x.T @ grad / len(grad) + 1e-3 * w)
        b -= 0.5 * grad.mean()
    accuracy = np.mean(((x_test @ w + b) > 0) == test_labels)
    assert accuracy >= 0.85
    # ...and the two classes' mean crops differ visibly.
    crops = np.array([crop_resize(to_gray(im), brain_box(im), 32) for im in train_images], np.float32)
    assert crops[train_labels == 1].mean() > crops[train_labels == 0].mean() + 3


def test_write_phantom_dataset_layout(tmp_path):
    root = write_phantom_dataset(tmp_path / "phantom", n_tumor=3, n_healthy=2, seed=7)
    assert root == tmp_path / "phantom"
    yes = sorted(p.name for p in (root / "yes").iterdir())
    no = sorted(p.name for p in (root / "no").iterdir())
    masks = sorted(p.name for p in (root / "masks").iterdir())
    assert yes == masks == ["tumor_000.png", "tumor_001.png", "tumor_002.png"]
    assert no == ["healthy_000.png", "healthy_001.png"]
    images, _, raw_masks = make_phantom(3, 2, seed=7)
    np.testing.assert_array_equal(read_image(root / "yes" / "tumor_001.png"), images[1])  # PNG is lossless
    np.testing.assert_array_equal(read_image(root / "no" / "healthy_000.png"), images[3])
    mask = cv2.imread(str(root / "masks" / "tumor_002.png"), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask // 255, raw_masks[2])
