"""Brain crop (paper Section 2.1): boxes on synthetic heads, the fallback, and crop_resize shapes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jaxmri.data.crop import brain_box, crop_resize
from jaxmri.data.phantom import make_phantom


def _head(height=200, width=300, center=(160, 90), axes=(70, 50), value=180):
    """Black image with one filled bright ellipse; returns (gray image, its exact bounding box)."""
    image = np.zeros((height, width), np.uint8)
    cv2.ellipse(image, center, axes, 0, 0, 360, value, -1)
    ys, xs = np.nonzero(image)
    return image, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_box_of_an_ellipse_matches_its_extreme_points():
    image, expected = _head()
    box = brain_box(image)
    assert all(isinstance(v, int) for v in box)
    # Blur + threshold + erode/dilate move the outline by at most a pixel or two.
    assert np.abs(np.array(box) - np.array(expected)).max() <= 2


def test_gray_rgb_and_single_channel_inputs_give_the_same_box():
    image, _ = _head()
    box = brain_box(image)
    assert brain_box(np.dstack([image] * 3)) == box
    assert brain_box(image[:, :, None]) == box


def test_specks_and_a_separate_label_are_ignored():
    image, expected = _head()
    image[0, 0] = image[199, 299] = 255  # single-pixel specks: removed by the erosion
    cv2.putText(image, "R", (270, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)  # smaller than the head
    assert np.abs(np.array(brain_box(image)) - np.array(expected)).max() <= 2


@pytest.mark.parametrize("image", [
    np.zeros((120, 90), np.uint8),  # black: no contour at all
    np.full((120, 90, 3), 30, np.uint8),  # dark grey below the threshold 45
    np.pad(np.full((3, 3), 255, np.uint8), ((60, 57), (40, 47))),  # a speck that erosion removes
])
def test_no_contour_falls_back_to_the_whole_image(image):
    assert brain_box(image) == (0, 0, 90, 120)


def test_tiny_contour_falls_back_to_the_whole_image():
    image = np.zeros((400, 400), np.uint8)
    image[200:212, 200:212] = 255  # survives erosion, but 3 % of the width is no brain
    assert brain_box(image) == (0, 0, 400, 400)


def test_bright_image_gives_whole_image():
    assert brain_box(np.full((50, 70), 200, np.uint8)) == (0, 0, 70, 50)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="uint8"):
        brain_box(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="shape"):
        brain_box(np.zeros((10, 10, 4), np.uint8))


def test_phantom_boxes_hold_every_tumor_pixel_and_drop_the_background():
    images, labels, masks = make_phantom(10, 4, seed=3)
    for image, mask in zip(images, masks):
        x0, y0, x1, y1 = brain_box(image)
        height, width = image.shape[:2]
        assert (x1 - x0) * (y1 - y0) < 0.95 * height * width
        ys, xs = np.nonzero(mask)
        if len(xs):
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1


@pytest.mark.parametrize("shape", [(50, 80), (50, 80, 1), (50, 80, 3), (50, 80, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_crop_resize_shapes_and_dtypes(shape, dtype):
    image = np.random.default_rng(0).uniform(0, 255, shape).astype(dtype)
    out = crop_resize(image, (10, 5, 70, 45), 32)
    assert out.dtype == dtype
    assert out.shape == (32, 32) + tuple(shape[2:])


def test_crop_resize_box_ends_are_exclusive():
    image = np.arange(50 * 80, dtype=np.float32).reshape(50, 80)
    np.testing.assert_array_equal(crop_resize(image, (10, 5, 42, 37), 32), image[5:37, 10:42])


@pytest.mark.parametrize("values", [(0, 1), (0, 255)])
def test_mask_crop_with_nearest_stays_binary(values):
    rng = np.random.default_rng(1)
    mask = np.where(rng.random((97, 131)) < 0.3, values[1], values[0]).astype(np.uint8)
    out = crop_resize(mask, (7, 3, 120, 90), 64, interpolation=cv2.INTER_NEAREST)
    assert out.shape == (64, 64)
    assert set(np.unique(out)) == set(values)
    if values[1] == 255:  # the image default (INTER_AREA) would invent in-between values
        assert len(np.unique(crop_resize(mask, (7, 3, 120, 90), 64))) > 2


def test_bool_mask_crop_resize():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    out = crop_resize(mask, (0, 0, 40, 40), 20, interpolation=cv2.INTER_NEAREST)
    assert out.dtype == np.bool_ and out.sum() == 100


@pytest.mark.parametrize("box", [(0, 0, 0, 10), (5, 5, 5, 6), (-1, 0, 10, 10), (0, 0, 81, 50), (0, 0, 80, 51)])
def test_crop_resize_rejects_empty_or_outside_boxes(box):
    with pytest.raises(ValueError, match="crop box"):
        crop_resize(np.zeros((50, 80), np.uint8), box, 16)


def test_crop_resize_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        crop_resize(np.zeros((50, 80), np.uint8), (0, 0, 80, 50), 0)
