"""Winograd F(2x2, 3x3) (jaxmri.models.winograd): the same convolution as XLA's, chosen on CPU only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmri.models import VGG19Classifier
from jaxmri.models.layers import conv3x3_same, max_pool_2x2
from jaxmri.models.winograd import WINOGRAD_MIN_CHANNELS, conv3x3, conv3x3_winograd, kernel_transform

# float32 rounding: the direct convolution itself is this far from a float64 one (see the module docstring).
TOLERANCE = 5e-6


def _inputs(n, h, w, c, o, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, c, o)) / np.sqrt(9 * c), jnp.float32)
    return x, kernel


def _relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(a))


SHAPES = [(2, 8, 8, 3, 4), (1, 7, 5, 6, 2), (2, 1, 1, 4, 3), (1, 2, 9, 5, 5), (3, 6, 6, 128, 8), (1, 13, 10, 17, 11)]


@pytest.mark.parametrize("n, h, w, c, o", SHAPES)
def test_equals_the_direct_convolution(n, h, w, c, o):
    x, kernel = _inputs(n, h, w, c, o)
    y = conv3x3_winograd(x, kernel)
    assert y.shape == (n, h, w, o) and y.dtype == jnp.float32
    assert _relative(conv3x3_same(x, kernel), y) < TOLERANCE


@pytest.mark.parametrize("n, h, w, c, o", [s for s in SHAPES if min(s[1:3]) >= 2])
def test_pool_equals_max_pool_of_the_convolution(n, h, w, c, o):
    x, kernel = _inputs(n, h, w, c, o, seed=1)
    expected = max_pool_2x2(conv3x3_same(x, kernel))  # odd trailing rows/columns dropped, as PyTorch
    pooled = conv3x3_winograd(x, kernel, pool=True)
    assert pooled.shape == expected.shape
    assert _relative(expected, pooled) < TOLERANCE


def test_gradients_equal_the_direct_convolution():
    x, kernel = _inputs(2, 6, 7, 5, 4, seed=2)
    target = jnp.asarray(np.random.default_rng(3).standard_normal((2, 6, 7, 4)), jnp.float32)

    def loss(conv, x, kernel):
        return jnp.sum((conv(x, kernel) - target) ** 2)

    direct = jax.grad(loss, argnums=(1, 2))(conv3x3_same, x, kernel)
    winograd = jax.grad(loss, argnums=(1, 2))(conv3x3_winograd, x, kernel)
    for d, w in zip(direct, winograd):
        assert _relative(d, w) < 1e-5


def test_kernel_transform_is_g_kernel_g_transposed():
    _, kernel = _inputs(1, 1, 1, 3, 2, seed=4)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    expected = np.einsum("ad,deio,be->abio", g, np.asarray(kernel, np.float64), g).reshape(16, 3, 2)
    np.testing.assert_allclose(kernel_transform(kernel), expected, rtol=1e-6, atol=1e-7)


def test_bad_kernel_is_refused_with_its_shapes():
    x, kernel = _inputs(1, 4, 4, 3, 2)
    with pytest.raises(ValueError, match=r"needs a \(3, 3, 3, O\) kernel"):
        conv3x3_winograd(x, kernel[:, :, :2])


def _hlo(fn, *args, platform=None):
    lowered = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,) if platform else None)
    return lowered.as_text()


@pytest.mark.parametrize("pool", [False, True])
def test_conv3x3_picks_winograd_on_cpu_only(pool):
    """On CPU and from WINOGRAD_MIN_CHANNELS input channels: 16 matmuls, no convolution. A program lowered
    for GPU or TPU (no device needed to lower) holds XLA's convolution and no Winograd matmuls."""
    x, kernel = _inputs(1, 4, 4, WINOGRAD_MIN_CHANNELS, 4)
    bias = jnp.ones(4)
    fn = lambda x, k, b: conv3x3(x, k, b, pool=pool)
    cpu = _hlo(fn, x, kernel, bias)
    assert cpu.count("stablehlo.dot_general") == 16 and "stablehlo.convolution" not in cpu
    for platform in ("cuda", "tpu"):
        other = _hlo(fn, x, kernel, bias, platform=platform)
        assert "stablehlo.convolution" in other and "stablehlo.dot_general" not in other, platform
    expected = conv3x3_same(x, kernel)
    expected = (max_pool_2x2(expected) if pool else expected) + bias
    assert _relative(expected, fn(x, kernel, bias)) < TOLERANCE


def test_conv3x3_keeps_the_direct_convolution_below_the_threshold_or_when_off():
    x, kernel = _inputs(1, 4, 4, WINOGRAD_MIN_CHANNELS - 1, 4)
    assert "stablehlo.dot_general" not in _hlo(lambda x, k: conv3x3(x, k, 0.0), x, kernel)
    x, kernel = _inputs(1, 4, 4, WINOGRAD_MIN_CHANNELS, 4)
    assert "stablehlo.dot_general" not in _hlo(lambda x, k: conv3x3(x, k, 0.0, winograd=False), x, kernel)


def test_vgg19_with_and_without_winograd_agree():
    """Blocks 3-5 at 128 channels take the Winograd path; the logits and Grad-CAM's maps match XLA's
    convolution, and flipping ``model.winograd`` makes nnx.jit trace the other program."""
    widths = (8, 16, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS)
    model = VGG19Classifier(2, widths=widths, hidden=16, rngs=nnx.Rngs(0))
    model.eval()
    images = jnp.asarray(np.random.default_rng(5).random((2, 64, 64, 3)), jnp.float32)
    forward = nnx.jit(lambda m, x: (m(x), m.last_conv(x)))
    logits, maps = forward(model, images)
    model.winograd = False
    direct_logits, direct_maps = forward(model, images)
    assert _relative(direct_maps, maps) < TOLERANCE
    np.testing.assert_allclose(logits, direct_logits, rtol=1e-4, atol=1e-6)
    assert not np.array_equal(np.asarray(maps), np.asarray(direct_maps))  # two programs really ran


@pytest.mark.parametrize("pool", [False, True])
def test_a_transformed_kernel_given_beforehand_gives_the_same_convolution(pool):
    """``transformed`` (stacked or as 16 matrices) replaces the in-place kernel transform bit for bit;
    the kernel then only supplies the shape."""
    x, kernel = _inputs(2, 6, 7, 5, 3)
    expected = conv3x3_winograd(x, kernel, pool=pool)
    u = jax.jit(kernel_transform)(kernel)
    for transformed in (u, tuple(u)):
        np.testing.assert_array_equal(expected, conv3x3_winograd(x, kernel, pool=pool, transformed=transformed))
    # with a different transformed kernel the output follows it, not ``kernel``
    other = conv3x3_winograd(x, kernel, pool=pool, transformed=tuple(2 * u))
    np.testing.assert_allclose(other, 2 * expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"16 matrices \(5, 3\)"):
        conv3x3_winograd(x, kernel, transformed=u[:15])


def _wide_vgg19(**kwargs):
    widths = (8, 16, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS)
    return VGG19Classifier(2, widths=widths, hidden=16, rngs=nnx.Rngs(0), **kwargs)


def test_frozen_kernels_give_the_same_train_step_and_leave_no_trace():
    """Inside ``frozen_kernels`` the 11 layers of 128+ input channels read kernels transformed once; the
    train step's loss and updated head are bit-identical to the per-step transform, and on leaving
    the model's state is what it was (nothing extra to checkpoint)."""
    from jaxmri.training.classify_steps import train_step
    from jaxmri.training.optim import make_optimizer

    rng = np.random.default_rng(3)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (2, 64, 64, 3)), jnp.uint8),
             "label": jnp.asarray([0, 1], jnp.int32), "weight": jnp.ones(2, jnp.float32)}
    results = []
    for frozen in (False, True):
        model = _wide_vgg19()
        model.train()
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=4e-4)
        keys = {path for path, _ in nnx.to_flat_state(nnx.state(model))}
        if frozen:
            with model.frozen_kernels():
                cached = [v is not None for v in model.winograd_kernels]
                assert cached == [False] * 5 + [True] * 11  # block 3 starts from 16 channels
                result = train_step(model, optimizer, batch, jax.random.key(1))
            assert model.winograd_kernels is None
        else:
            result = train_step(model, optimizer, batch, jax.random.key(1))
        assert {path for path, _ in nnx.to_flat_state(nnx.state(model))} == keys
        results.append((float(result["loss_sum"]), np.asarray(model.head.kernel[...])))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("setting", [{"freeze_backbone": False}, {"winograd": False}])
def test_frozen_kernels_are_a_no_op_when_the_backbone_trains_or_winograd_is_off(setting):
    model = _wide_vgg19(**setting)
    with model.frozen_kernels():
        assert model.winograd_kernels is None


def test_frozen_kernels_are_dropped_when_the_block_raises():
    model = _wide_vgg19()
    with pytest.raises(KeyboardInterrupt):
        with model.frozen_kernels():
            assert model.winograd_kernels is not None
            raise KeyboardInterrupt
    assert model.winograd_kernels is None


def test_the_classification_epoch_transforms_a_frozen_vgg19s_kernels_once(monkeypatch):
    """``training.classify.train_epoch`` runs its steps inside ``frozen_kernels``: one transform per epoch."""
    from jaxmri.training import classify
    from jaxmri.training.optim import make_optimizer

    entered = []
    original = VGG19Classifier.frozen_kernels

    def recording(self):
        entered.append(self)
        return original(self)

    monkeypatch.setattr(VGG19Classifier, "frozen_kernels", recording)
    model = _wide_vgg19()
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (6, 64, 64, 3)).astype(np.uint8), "label": np.array([0, 1] * 3, np.int32)}
    metrics = classify.train_epoch(model, optimizer, arrays, np.arange(6), jax.random.key(0), batch_size=2, max_angle=10.0)
    assert entered == [model] and np.isfinite(metrics["train_loss"])
    assert model.winograd_kernels is None
