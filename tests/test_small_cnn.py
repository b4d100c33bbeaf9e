"""SmallCNN against the paper's Table 2: parameter count, every layer's output size, a whole train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmri.models import count_params
from jaxmri.models import conv_pool
from jaxmri.models.conv_pool import conv3x3_relu_max_pool_2x2
from jaxmri.models.layers import max_pool_2x2, normalize
from jaxmri.models.small_cnn import SmallCNN
from jaxmri.training.classify_steps import train_step
from jaxmri.training.optim import make_optimizer


@pytest.fixture(scope="module")
def model():
    return SmallCNN(2, rngs=nnx.Rngs(0))


def test_parameter_count_matches_table_2(model):
    conv1 = 3 * 3 * 3 * 16 + 16
    conv2 = 3 * 3 * 16 * 32 + 32
    fc1 = 32 * 56 * 56 * 128 + 128
    fc2 = 128 * 2 + 2
    assert count_params(model) == conv1 + conv2 + fc1 + fc2 == 12_850_530


@settings(max_examples=6, deadline=None)
@given(batch=st.integers(min_value=1, max_value=9))
def test_every_layer_output_size_matches_table_2(model, batch):
    # Walk Table 2 row by row through the model's own layers (shapes only: no compute).
    def table_rows(x):
        rows = []
        x = nnx.relu(model.conv1(x)); rows.append(x)          # 1 Conv2d(3, 16)   224 x 224
        x = max_pool_2x2(x); rows.append(x)                   # 2 MaxPool2d       112 x 112
        x = nnx.relu(model.conv2(x)); rows.append(x)          # 3 Conv2d(16, 32)  112 x 112
        x = max_pool_2x2(x); rows.append(x)                   # 4 MaxPool2d       56 x 56
        x = nnx.relu(model.fc1(x.reshape(x.shape[0], -1))); rows.append(x)  # 5 Linear -> 128
        x = model.fc2(x); rows.append(x)                      # 6 Linear -> 2
        return rows

    rows = jax.eval_shape(table_rows, jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32))
    assert [r.shape for r in rows] == [
        (batch, 224, 224, 16),
        (batch, 112, 112, 16),
        (batch, 112, 112, 32),
        (batch, 56, 56, 32),
        (batch, 128),
        (batch, 2),
    ]
    out = jax.eval_shape(lambda x: model(x), jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32))
    assert out.shape == (batch, 2) and out.dtype == jnp.float32


@pytest.mark.parametrize("bad", [(2, 224, 224, 1), (2, 112, 112, 3), (224, 224, 3)])
def test_wrong_input_shape_is_a_clear_error(model, bad):
    with pytest.raises(ValueError, match="SmallCNN expects NHWC"):
        model(jnp.zeros(bad))


@pytest.mark.parametrize("kwargs", [{"image_size": 30}, {"num_classes": 1}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError, match="SmallCNN"):
        SmallCNN(**{"num_classes": 2, **kwargs}, rngs=nnx.Rngs(0))


def test_whole_train_step_learns_a_fixed_batch():
    # A small image size keeps this fast; the step is the library's own jitted train_step.
    model = SmallCNN(2, image_size=32, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=4e-4)
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 4, np.int32)
    images = (rng.random((8, 32, 32, 3)) * 60 + labels[:, None, None, None] * 150).astype(np.uint8)
    batch = {"image": images, "label": labels, "weight": np.ones(8, np.float32)}
    first = train_step(model, optimizer, batch)
    for _ in range(15):
        last = train_step(model, optimizer, batch)
    assert float(last["loss_sum"]) < float(first["loss_sum"])
    assert float(last["correct"]) == 8.0


def test_train_step_leaves_the_augmentation_to_xla_and_matches_the_plain_jit(monkeypatch):
    # The library's step is compiled with YNN_REDUCE_ONLY on CPU: YNNPACK's elementwise fusion made the
    # augmentation 3.3x slower, so the step hands YNNPACK fewer fusions than the old option did.
    from jaxmri.training import classify_steps
    from jaxmri.training.compiled import YNN_REDUCE_ONLY, YNN_WITHOUT_CONVOLUTIONS, cpu_compiler_options

    def inputs():
        model = SmallCNN(2, image_size=32, rngs=nnx.Rngs(0))
        return model, make_optimizer(model, lr=1e-3, weight_decay=4e-4)

    rng = np.random.default_rng(1)
    batch = {"image": rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8),
             "label": np.array([0, 1, 0, 1], np.int32), "weight": np.ones(4, np.float32)}
    key, kwargs = jax.random.key(3), {"label_smoothing": 0.0, "max_angle": 15.0}
    model, optimizer = inputs()
    if jax.default_backend() == "cpu":
        assert train_step.options == classify_steps.TRAIN_COMPILER_OPTIONS == YNN_REDUCE_ONLY
        ours = train_step.compiled_for(model, optimizer, batch, key, **kwargs).as_text()
        eltwise = classify_steps.plain_train_step.lower(model, optimizer, batch, key, **kwargs).compile(
            YNN_WITHOUT_CONVOLUTIONS).as_text()
        assert ours.count('"__ynn_fusion"') < eltwise.count('"__ynn_fusion"')
    twin_model, twin_optimizer = inputs()
    out_a = train_step(model, optimizer, batch, key, **kwargs)
    out_b = classify_steps.plain_train_step(twin_model, twin_optimizer, batch, key, **kwargs)
    np.testing.assert_allclose(out_a["loss_sum"], out_b["loss_sum"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(twin_model))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # Adam's first step moves each weight ~1e-3
    for backend in ("gpu", "tpu"):  # and no CPU option reaches another backend's compiler
        monkeypatch.setattr(jax, "default_backend", lambda: backend)
        assert cpu_compiler_options(classify_steps.TRAIN_COMPILER_OPTIONS) == {} and train_step.options == {}


def _plain_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _plain_conv_relu_pool(x, kernel, bias):
    # Table 2 layers 1-2 written the obvious way: the reference for the blocked computation.
    return max_pool_2x2(nnx.relu(_plain_conv(x, kernel) + bias))


# (input shape, output channels) for the blocked layer: SmallCNN's own, odd sizes, one and five channels
BLOCKED_CASES = [((2, 8, 8, 3), 16), ((1, 6, 10, 3), 4), ((3, 4, 4, 1), 2), ((1, 2, 2, 5), 3)]


@pytest.mark.parametrize("shape, cout", BLOCKED_CASES)
def test_blocked_conv_relu_pool_equals_the_plain_layers_and_their_gradients(shape, cout):
    rng = np.random.default_rng(sum(shape))
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, shape[-1], cout)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(cout), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, cout)), jnp.float32)

    out = jax.jit(conv3x3_relu_max_pool_2x2)(x, kernel, bias)
    np.testing.assert_allclose(out, _plain_conv_relu_pool(x, kernel, bias), rtol=1e-5, atol=1e-5)

    def grads(fn):
        return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent), argnums=(0, 1, 2)))(x, kernel, bias)

    for got, want in zip(grads(conv3x3_relu_max_pool_2x2), grads(_plain_conv_relu_pool)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, cout", BLOCKED_CASES)
def test_both_kernel_gradients_equal_the_plain_convolutions(shape, cout):
    """The CPU's per-image products and the GPU/TPU branch (XLA's weight-gradient convolution, which a CPU
    run never takes) each give the plain 3x3 convolution's kernel gradient for the same cotangent."""
    rng = np.random.default_rng(sum(shape) + cout)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, shape[-1], cout)), jnp.float32)
    g_phases = jnp.asarray(rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, 2, 2, cout)), jnp.float32)
    g_map = g_phases.transpose(0, 1, 3, 2, 4, 5).reshape(shape[:3] + (cout,))
    expected = jax.vjp(lambda k: _plain_conv(x, k), kernel)[1](g_map)[0]
    for kernel_grad in (conv_pool._kernel_grad, conv_pool._conv_kernel_grad):
        np.testing.assert_allclose(jax.jit(kernel_grad)(x, kernel, g_phases), expected, rtol=1e-5, atol=1e-5)


def test_blocked_conv_kernel_gradient_is_a_product_on_cpu_and_the_convolution_elsewhere():
    """On CPU the kernel's gradient is a matrix product over the blocks' patches (a concatenate, and no
    second convolution); a program lowered for GPU or TPU (no device needed to lower) keeps XLA's
    weight-gradient convolution instead."""
    x, kernel, bias = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), jnp.ones(4)
    kernel_grad = lambda x, k, b: jax.grad(lambda k: conv3x3_relu_max_pool_2x2(x, k, b).sum())(k)

    def hlo(platform):
        lowered = jax.jit(kernel_grad).trace(x, kernel, bias).lower(lowering_platforms=(platform,))
        return lowered.as_text()

    cpu = hlo("cpu")
    assert cpu.count("stablehlo.convolution") == 1 and "stablehlo.concatenate" in cpu
    for platform in ("cuda", "tpu"):
        other = hlo(platform)
        assert other.count("stablehlo.convolution") == 2 and "stablehlo.concatenate" not in other, platform


def test_blocked_conv_relu_pool_rejects_odd_maps():
    with pytest.raises(ValueError, match="even H and W"):
        conv3x3_relu_max_pool_2x2(jnp.zeros((1, 5, 6, 3)), jnp.zeros((3, 3, 3, 4)), jnp.zeros(4))


def test_small_cnn_logits_and_gradients_match_the_plain_first_layer():
    # The whole model at the paper's size: the blocked first layer changes nothing beyond float32 rounding.
    model = SmallCNN(2, rngs=nnx.Rngs(3))
    images = jnp.asarray(np.random.default_rng(3).random((2, 224, 224, 3)), jnp.float32)

    def plain_logits(m, x):
        x = _plain_conv_relu_pool(normalize(x), m.conv1.kernel[...], m.conv1.bias[...])
        return m.from_last_conv(nnx.relu(m.conv2(x)))

    np.testing.assert_allclose(model(images), plain_logits(model, images), rtol=1e-4, atol=1e-5)
    got = nnx.grad(lambda m: jnp.sum(m(images)[:, 1]))(model)
    want = nnx.grad(lambda m: jnp.sum(plain_logits(m, images)[:, 1]))(model)
    for name in ("conv1", "conv2", "fc1"):
        np.testing.assert_allclose(getattr(got, name).kernel[...], getattr(want, name).kernel[...], rtol=1e-3, atol=1e-5)
