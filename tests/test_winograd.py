"""Winograd F(2x2, 3x3) (jaxmri.models.winograd): the same convolution as XLA's, chosen on CPU only."""

import contextlib

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
    the kernel then only supplies the shape. ``conv3x3`` passes it to the CPU (Winograd) branch."""
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
    x, kernel = _inputs(1, 4, 4, WINOGRAD_MIN_CHANNELS, 4)
    doubled = tuple(2 * jax.jit(kernel_transform)(kernel))
    direct = conv3x3_same(x, kernel)
    direct = max_pool_2x2(direct) if pool else direct
    assert _relative(2 * direct + 1.0, conv3x3(x, kernel, 1.0, pool=pool, transformed=doubled)) < TOLERANCE


def _wide_vgg19(**kwargs):
    widths = (8, 16, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS)
    return VGG19Classifier(2, widths=widths, hidden=16, rngs=nnx.Rngs(0), **kwargs)


def _state_paths(model):
    return {path for path, _ in nnx.to_flat_state(nnx.state(model))}


def test_the_winograd_cache_is_read_and_gives_the_same_train_step():
    """Inside ``winograd_cache`` the 11 layers of 128+ input channels read kernels transformed once (a
    changed cache entry changes the output); the train step's loss and updated head are bit-identical
    to the per-step transform, and on leaving the model's state is what it was (nothing to checkpoint)."""
    from jaxmri.training.classify_steps import train_step
    from jaxmri.training.optim import make_optimizer
    from jaxmri.models.vgg19 import WinogradKernels

    rng = np.random.default_rng(3)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (2, 64, 64, 3)), jnp.uint8),
             "label": jnp.asarray([0, 1], jnp.int32), "weight": jnp.ones(2, jnp.float32)}
    forward = nnx.jit(lambda m, x: m.last_conv(x))
    images = batch["image"].astype(jnp.float32) / 255
    results = []
    for cached in (False, True):
        model = _wide_vgg19()
        model.train()
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=4e-4)
        paths = _state_paths(model)
        if cached:
            with model.winograd_cache(optimizer.wrt):
                assert [v is not None for v in model.winograd_kernels] == [False] * 5 + [True] * 11  # block 3 starts at 16
                result = train_step(model, optimizer, batch, jax.random.key(1))
                maps = forward(model, images)
                last = model.winograd_kernels[15]
                model.winograd_kernels[15] = WinogradKernels(tuple(2 * u for u in last.get_value()))
                assert not np.allclose(maps, forward(model, images))  # the step really reads the cache
                model.winograd_kernels[15] = last
            assert model.winograd_kernels is None
        else:
            result = train_step(model, optimizer, batch, jax.random.key(1))
        assert _state_paths(model) == paths
        results.append((float(result["loss_sum"]), np.asarray(model.head.kernel[...])))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_kernels_the_optimizer_trains_are_never_cached():
    """The optimizer's ``wrt``, not ``freeze_backbone``, decides: a model built frozen but fine-tuned with
    ``wrt=nnx.Param`` (lesson 3) caches nothing, nor does ``freeze_backbone=False``; with block 5 trained,
    blocks 3-4 are still cached. Winograd off: nothing."""
    from jaxmri.training.optim import make_tx

    cases = [(_wide_vgg19(), nnx.Param, [False] * 16),
             (_wide_vgg19(freeze_backbone=False), None, [False] * 16),
             (_wide_vgg19(), nnx.Any(nnx.PathContains("head"), nnx.PathContains(12), nnx.PathContains(13),
                                      nnx.PathContains(14), nnx.PathContains(15)), [False] * 5 + [True] * 7 + [False] * 4),
             (_wide_vgg19(winograd=False), None, None)]
    for model, wrt, expected in cases:
        optimizer = nnx.Optimizer(model, make_tx(lr=1e-3, weight_decay=0.0), wrt=wrt) if wrt is not None else None
        with model.winograd_cache(optimizer.wrt if optimizer else None):
            got = None if model.winograd_kernels is None else [v is not None for v in model.winograd_kernels]
            assert got == expected


def test_fine_tuning_a_frozen_built_vgg19_trains_its_convolutions_as_without_the_cache(monkeypatch):
    """``train_epoch`` with an optimizer over every parameter: the convolutions move, exactly as they do
    when the loop runs without ``winograd_cache`` (a cached kernel would get no gradient at all)."""
    from jaxmri.training import classify
    from jaxmri.training.optim import make_tx

    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (4, 64, 64, 3)).astype(np.uint8), "label": np.array([0, 1] * 2, np.int32)}
    kernels = []
    for use_cache in (True, False):
        if not use_cache:
            monkeypatch.setattr(classify, "winograd_cache", lambda model, optimizer: contextlib.nullcontext())
        model = _wide_vgg19()
        before = np.asarray(model.convs[15].kernel[...])
        optimizer = nnx.Optimizer(model, make_tx(lr=1e-3, weight_decay=0.0), wrt=nnx.Param)
        classify.train_epoch(model, optimizer, arrays, np.arange(4), jax.random.key(0), batch_size=2, max_angle=10.0)
        kernels.append(np.asarray(model.convs[15].kernel[...]))
        assert not np.array_equal(before, kernels[-1])
    np.testing.assert_array_equal(kernels[0], kernels[1])


def test_the_winograd_cache_is_restored_when_the_block_raises_or_nests():
    model = _wide_vgg19()
    with pytest.raises(KeyboardInterrupt):
        with model.winograd_cache():
            assert model.winograd_kernels is not None
            raise KeyboardInterrupt
    assert model.winograd_kernels is None
    with model.winograd_cache():
        outer = model.winograd_kernels
        with model.winograd_cache():
            pass
        assert model.winograd_kernels is outer
    assert model.winograd_kernels is None


def test_the_classification_epoch_transforms_a_frozen_vgg19s_kernels_once(monkeypatch):
    """``training.classify.train_epoch`` runs its steps inside the cache: one kernel transform per epoch."""
    from jaxmri.models import vgg19
    from jaxmri.training import classify
    from jaxmri.training.optim import make_optimizer

    calls, seen = [], []
    original = vgg19._transform_all
    monkeypatch.setattr(vgg19, "_transform_all", lambda kernels: calls.append(len(kernels)) or original(kernels))
    step = classify.train_step
    monkeypatch.setattr(classify, "train_step",
                        lambda model, *args, **kwargs: seen.append(model.winograd_kernels is not None) or step(model, *args, **kwargs))
    model = _wide_vgg19()
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (6, 64, 64, 3)).astype(np.uint8), "label": np.array([0, 1] * 3, np.int32)}
    metrics = classify.train_epoch(model, optimizer, arrays, np.arange(6), jax.random.key(0), batch_size=2, max_angle=10.0)
    assert calls == [11] and seen == [True] * 3 and np.isfinite(metrics["train_loss"])
    assert model.winograd_kernels is None


def test_with_nothing_training_every_kernel_is_cached_and_eval_and_gradcam_are_unchanged():
    """``classify.winograd_cache(model)`` without an optimizer (predict) caches all 11 Winograd layers, and
    the evaluation logits and Grad-CAM maps are bit-identical to those with the per-call transform."""
    from jaxmri.models.gradcam import gradcam
    from jaxmri.training import classify
    from jaxmri.training.classify_steps import eval_step

    model = _wide_vgg19(freeze_backbone=False)  # nothing trains in predict, whatever the model was built for
    model.eval()
    batch = {"image": jnp.asarray(np.random.default_rng(4).integers(0, 256, (2, 64, 64, 3)), jnp.uint8)}
    expected = (eval_step(model, batch), gradcam(model, batch, target=1))
    with classify.winograd_cache(model):
        assert sum(v is not None for v in model.winograd_kernels) == 11
        got = (eval_step(model, batch), gradcam(model, batch, target=1))
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)
