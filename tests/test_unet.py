"""UNet (Section 3.2, Table 5 corrected): stage shapes, argument errors, parameter count, one train step."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmri.models import UNet, count_params
from jaxmri.models.layers import upsample_2x, upsample_conv_2x2
from jaxmri.training.segment_steps import train_step


def expected_stages(n, h, w, in_channels, out_channels, width, depth):
    """Every stage's shape, written out from the corrected Table 5 (independently of jaxmri.models.unet)."""
    stages = [("input", (n, h, w, in_channels))]
    for k in range(1, depth + 1):
        f, s = width * 2 ** (k - 1), 2 ** (k - 1)
        stages.append((f"encoder{k}_skip", (n, h // s, w // s, f)))
        stages.append((f"encoder{k}", (n, h // (2 * s), w // (2 * s), f)))
    d = 2**depth
    stages.append(("bottleneck", (n, h // d, w // d, width * d)))
    for k in range(depth, 0, -1):
        f, s = width * 2 ** (k - 1), 2 ** (k - 1)
        stages += [
            (f"decoder{k}_up", (n, h // s, w // s, f)),
            (f"decoder{k}_concat", (n, h // s, w // s, 2 * f)),
            (f"decoder{k}", (n, h // s, w // s, f)),
        ]
    stages.append(("output", (n, h, w, out_channels)))
    return stages


def fast_rngs(seed: int) -> nnx.Rngs:
    """Eager construction compiles one initialiser per kernel shape; the 'rbg' PRNG compiles ~3x faster."""
    return nnx.Rngs(params=jax.random.key(seed, impl="rbg"))


@pytest.fixture(scope="module")
def tiny():
    """A width-2, depth-4 UNet with real weights, built once for the tests that run it."""
    return UNet(1, 1, width=2, depth=4, rngs=fast_rngs(0))


@pytest.mark.parametrize(
    "in_channels, out_channels, width, depth, shape",
    [
        (1, 1, 2, 4, (2, 32, 32, 1)),
        (1, 1, 2, 4, (1, 16, 48, 1)),  # non-square
        (3, 2, 2, 2, (1, 8, 12, 3)),
        (1, 1, 4, 1, (3, 18, 2, 1)),
        (2, 5, 2, 3, (1, 64, 24, 2)),
    ],
)
def test_call_output_shape(in_channels, out_channels, width, depth, shape):
    # Shapes only (abstract evaluation): building real weights compiles an initialiser per kernel shape.
    model = nnx.eval_shape(lambda: UNet(in_channels, out_channels, width=width, depth=depth, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda model, x: model(x), model, jax.ShapeDtypeStruct(shape, jnp.float32))
    assert out.shape == shape[:3] + (out_channels,)
    assert out.dtype == jnp.float32


def test_real_call_gives_finite_float32_logits(tiny):
    out = nnx.jit(lambda model, x: model(x))(tiny, jnp.ones((2, 32, 48, 1)))
    assert out.shape == (2, 32, 48, 1) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


def test_paper_table5_corrected_stage_shapes():
    model = nnx.eval_shape(lambda: UNet(1, 1, width=64, rngs=nnx.Rngs(0)))
    stages = dict(model.stage_shapes((1, 256, 256, 1)))
    assert stages["encoder1"] == (1, 128, 128, 64)
    assert stages["encoder4"] == (1, 16, 16, 512)
    assert stages["bottleneck"] == (1, 16, 16, 1024)
    assert stages["decoder4"] == (1, 32, 32, 512)
    assert stages["decoder1"] == (1, 256, 256, 64)
    assert stages["output"] == (1, 256, 256, 1)


@settings(max_examples=30, deadline=None)
@given(
    depth=st.integers(1, 4),
    width=st.integers(1, 8),
    hm=st.integers(1, 4),
    wm=st.integers(1, 4),
    n=st.integers(1, 3),
    in_channels=st.integers(1, 3),
    out_channels=st.integers(1, 3),
)
def test_every_stage_shape(depth, width, hm, wm, n, in_channels, out_channels):
    h, w = hm * 2**depth, wm * 2**depth
    model = nnx.eval_shape(lambda: UNet(in_channels, out_channels, width=width, depth=depth, rngs=nnx.Rngs(0)))
    expected = expected_stages(n, h, w, in_channels, out_channels, width, depth)
    assert model.stage_shapes((n, h, w, in_channels)) == expected


def test_stage_shapes_match_a_real_call(tiny):
    out = nnx.jit(lambda model, x: model(x))(tiny, jnp.zeros((2, 16, 48, 1)))
    assert tiny.stage_shapes((2, 16, 48, 1))[-1] == ("output", out.shape)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0}, "width"),
        ({"width": -8}, "width"),
        ({"width": 2.0}, "width"),
        ({"width": True}, "width"),
        ({"depth": 0}, "depth"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": -1}, "out_channels"),
    ],
)
def test_bad_constructor_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**{"width": 2, **kwargs}, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 24, 32, 1), "multiples of 16"),  # 24 is not a multiple of 2**4
        ((1, 32, 40, 1), "multiples of 16"),
        ((1, 0, 16, 1), "multiples of 16"),
        ((1, 32, 32, 3), r"\(N, H, W, 1\)"),  # wrong channel count
        ((32, 32, 1), r"\(N, H, W, 1\)"),  # missing batch axis
    ],
)
def test_bad_input_raises(tiny, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny(jnp.zeros(shape))
    with pytest.raises(ValueError, match=match):
        tiny.stage_shapes(shape)


def paper_param_count(w: int) -> int:
    """Parameters of the depth-4, 1-in / 1-out U-Net with base width ``w``, derived by hand.

    A k x k conv from a to b channels has k*k*a*b weights + b biases. With c_k = w * 2**k:
      encoder 1:             (9*1*w + w) + (9*w*w + w)                   = 9w^2 + 11w
      encoder 2..4, bottle:  (9*(c/2)*c + c) + (9*c*c + c), c = 2w..16w  = 13.5c^2 + 2c each
      decoder at c = w..8w:  2x2 up-conv (4*2c*c + c) + (9*2c*c + c) + (9*c*c + c) = 35c^2 + 3c each
      head:                  w + 1
    Summing c^2 over 2w..16w gives 340w^2 and over w..8w gives 85w^2, so
    total = 9w^2 + 11w + 13.5*340w^2 + 2*30w + 35*85w^2 + 3*15w + w + 1 = 7574w^2 + 117w + 1.
    """
    return 7574 * w * w + 117 * w + 1


@pytest.mark.parametrize("width", [1, 3, 8])
def test_param_count_formula_small(width):
    model = nnx.eval_shape(lambda: UNet(1, 1, width=width, rngs=nnx.Rngs(0)))
    assert count_params(model) == paper_param_count(width)


def test_param_count_paper_width():
    model = nnx.eval_shape(lambda: UNet(1, 1, width=64, rngs=nnx.Rngs(0)))  # shapes only: no 124 MB init
    assert count_params(model) == paper_param_count(64) == 31_030_593


def test_trainable_filter_selects_every_param(tiny):
    assert count_params(tiny) == count_params(tiny, tiny.trainable_filter())


def test_upsample_2x_is_nearest_neighbour():
    x = jnp.arange(2 * 3 * 2 * 2, dtype=jnp.float32).reshape(2, 3, 2, 2)
    expected = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(upsample_2x(x), expected)


@pytest.mark.parametrize("shape, cout", [((2, 5, 3, 4), 3), ((1, 1, 1, 1), 2), ((1, 8, 8, 6), 5)])
def test_upsample_conv_2x2_equals_upsample_then_keras_same_conv(shape, cout):
    kx, kk, kb = jax.random.split(jax.random.key(0), 3)
    x, kernel = jax.random.normal(kx, shape), jax.random.normal(kk, (2, 2, shape[-1], cout))
    args = (x, kernel, jax.random.normal(kb, (cout,)))

    def reference(x, kernel, bias):
        # Keras padding="same" for a 2x2 kernel pads one row/column after and none before.
        padded = jnp.pad(upsample_2x(x), ((0, 0), (0, 1), (0, 1), (0, 0)))
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(padded, kernel, (1, 1), "VALID", dimension_numbers=dn) + bias

    np.testing.assert_allclose(upsample_conv_2x2(*args), reference(*args), rtol=1e-5, atol=1e-5)
    # Training uses its gradients, so they must match too.
    grads = jax.grad(lambda *a: jnp.sum(upsample_conv_2x2(*a) ** 2), argnums=(0, 1, 2))(*args)
    expected = jax.grad(lambda *a: jnp.sum(reference(*a) ** 2), argnums=(0, 1, 2))(*args)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_predict_proba_is_sigmoid_of_logits(tiny):
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
    p, logits = nnx.jit(lambda model, x: (model.predict_proba(x), model(x)))(tiny, x)
    np.testing.assert_allclose(p, jax.nn.sigmoid(logits), rtol=1e-6)
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0


def test_one_jitted_train_step_lowers_the_loss():
    model = UNet(1, 1, width=2, depth=2, rngs=fast_rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=model.trainable_filter())
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
    masks = jnp.zeros((2, 16, 16, 1)).at[:, 4:10, 5:12, :].set(1.0)

    batch = {"image": images, "mask": masks, "weight": jnp.ones(2)}
    # The library's own jitted segmentation step (paper's pixel BCE, no augmentation).
    before = float(train_step(model, optimizer, batch)["loss_sum"])
    for _ in range(4):
        train_step(model, optimizer, batch)
    after = float(optax.sigmoid_binary_cross_entropy(model(images), masks).mean())
    assert after < before


def _load_bench():
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "unet_bench.py"
    spec = importlib.util.spec_from_file_location("unet_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_reference_in_benchmark_is_the_same_network():
    """The PyTorch model that the benchmark times computes the same function, given the same weights."""
    torch = pytest.importorskip("torch")
    bench = _load_bench()
    model = UNet(1, 1, width=2, depth=4, rngs=fast_rngs(3))
    reference = bench.torch_unet_from_jax(model)
    assert sum(p.numel() for p in reference.parameters()) == count_params(model)
    x = np.array(jax.random.uniform(jax.random.key(2), (2, 32, 48, 1)))  # writable copy for torch
    with torch.no_grad():
        expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    actual = nnx.jit(lambda model, x: model(x))(model, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-4, atol=1e-5)


def _step_inputs():
    # Width 8 at 32 x 32: the smallest size at which XLA's default already gives convolutions to YNNPACK.
    model = UNet(1, 1, width=8, depth=2, rngs=fast_rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=model.trainable_filter())
    images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1))
    masks = jnp.zeros((2, 32, 32, 1)).at[:, 8:20, 10:24, :].set(1.0)
    return model, optimizer, {"image": images, "mask": masks, "weight": jnp.ones(2)}


def test_train_step_runs_gradient_convolutions_outside_ynnpack_and_matches_the_plain_jit():
    from jaxmri.training import segment_steps

    model, optimizer, batch = _step_inputs()
    step = segment_steps.train_step
    kwargs = {"loss": "bce", "max_angle": 15.0}
    if jax.default_backend() == "cpu":
        assert step.options == segment_steps.TRAIN_COMPILER_OPTIONS  # this jaxlib accepts the option

        # XLA's default gives every convolution to YNNPACK; with the step's option the gradient
        # convolutions run as plain (Eigen) convolution instructions in the entry computation.
        def entry_convolutions(text):
            return text[text.index("\nENTRY "):].count(" convolution(")

        fast = step.compiled_for(model, optimizer, batch, None, **kwargs).as_text()
        plain = segment_steps.plain_train_step.lower(model, optimizer, batch, None, **kwargs).compile().as_text()
        assert entry_convolutions(fast) > entry_convolutions(plain)
    twin_model, twin_optimizer, _ = _step_inputs()
    out_a = step(model, optimizer, batch, None, **kwargs)
    out_b = segment_steps.plain_train_step(twin_model, twin_optimizer, batch, None, **kwargs)
    np.testing.assert_allclose(out_a["loss_sum"], out_b["loss_sum"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(twin_model))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_compile_option_this_jaxlib_rejects_leaves_the_plain_jit():
    from jaxmri.training import segment_steps
    from jaxmri.training.compiled import CompiledStep, cpu_compiler_options

    bad = {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"}
    assert cpu_compiler_options(bad) == {}  # checked once, before any real step
    step = CompiledStep(segment_steps.plain_train_step, bad, static_argnames=("loss", "max_angle"))
    model, optimizer, batch = _step_inputs()
    out = step(model, optimizer, batch)
    assert np.isfinite(float(out["loss_sum"])) and step.cache_size() == 0  # nothing compiled with the option


def test_no_cpu_compile_option_reaches_another_backend(monkeypatch):
    from jaxmri.training import segment_steps
    from jaxmri.training.compiled import cpu_compiler_options

    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda: backend)
        assert cpu_compiler_options(segment_steps.TRAIN_COMPILER_OPTIONS) == {}
        assert segment_steps.train_step.options == {}
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert cpu_compiler_options(segment_steps.TRAIN_COMPILER_OPTIONS) == segment_steps.TRAIN_COMPILER_OPTIONS


def test_train_step_compiles_once_across_steps():
    from jaxmri.training import segment_steps
    from jaxmri.training.compiled import CompiledStep

    fresh = CompiledStep(segment_steps.plain_train_step, segment_steps.TRAIN_COMPILER_OPTIONS,
                         static_argnames=("loss", "max_angle"))  # a new cache of its own
    model, optimizer, batch = _step_inputs()
    for step in range(3):
        fresh(model, optimizer, batch, jax.random.key(step))
    assert fresh.cache_size() == (1 if fresh.options else 0)
