"""On-device augmentation: shapes, value ranges, determinism per key, masks kept binary and aligned."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmri.data.augment import _blur3, _rotate, augment, to_float

augment_jit = jax.jit(augment, static_argnames=("max_angle",))


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).integers(0, 256, (6, 40, 48, 3), dtype=np.uint8)


def test_shapes_dtype_and_range(batch):
    out = augment_jit(jax.random.key(0), batch)
    assert out.shape == batch.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_same_key_same_batch_other_key_other_batch(batch):
    a = augment_jit(jax.random.key(1), batch)
    b = augment_jit(jax.random.key(1), batch)
    c = augment_jit(jax.random.key(2), batch)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_images_in_a_batch_get_independent_draws():
    same = np.repeat(np.random.default_rng(1).integers(0, 256, (1, 32, 32, 1), dtype=np.uint8), 8, axis=0)
    out = np.asarray(augment_jit(jax.random.key(3), same))
    assert len({out[i].tobytes() for i in range(8)}) > 1


def test_masks_stay_binary_and_follow_their_image():
    # The image is its own mask (0/255): after a joint transform, thresholded image == mask except where
    # bilinear sampling and the blur soften the edge.
    masks = np.zeros((8, 32, 32, 1), np.uint8)
    masks[:, 10:22, 3:13] = 1  # off-centre, so a flip or rotation moves it
    images = masks * 255
    out_images, out_masks = augment_jit(jax.random.key(4), images, masks)
    out_masks = np.asarray(out_masks)
    assert set(np.unique(out_masks)) <= {0.0, 1.0}
    agree = np.mean((np.asarray(out_images) > 0.5) == (out_masks > 0.5))
    assert agree > 0.97
    assert not all(np.array_equal(out_masks[i], masks[i]) for i in range(8))


def test_rotation_by_zero_is_identity_and_by_90_matches_rot90():
    img = jnp.asarray(np.random.default_rng(3).random((16, 16, 2)), jnp.float32)
    np.testing.assert_allclose(_rotate(img, jnp.float32(0.0), order=1), img, atol=1e-6)
    rotated = np.asarray(_rotate(img, jnp.float32(90.0), order=0))
    np.testing.assert_allclose(rotated, np.rot90(np.asarray(img), k=1, axes=(0, 1)), atol=1e-6)


def test_blur_keeps_constants_and_mean():
    flat = jnp.full((10, 10, 1), 0.3)
    np.testing.assert_allclose(_blur3(flat, jnp.float32(1.0)), flat, atol=1e-6)
    spike = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
    blurred = _blur3(spike, jnp.float32(1.0))
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(blurred[4, 4, 0]) < 1.0 and float(blurred[3, 4, 0]) > 0.0


def test_to_float_scales_uint8_only():
    assert float(to_float(jnp.array([255], jnp.uint8))[0]) == 1.0
    assert float(to_float(jnp.array([0.5]))[0]) == 0.5
