"""Checkers for lesson 0 (JAX in an hour): each recomputes the answer its own way and compares."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from checks import expect, expect_close, ok
from jaxmri.models import SmallCNN
from jaxmri.training.classify import make_keys


def _window_loss(params, x, target):
    return jnp.mean((jax.nn.sigmoid(params["gain"] * (x - params["level"])) - target) ** 2)


def check_per_slice_gradients(per_slice_gradients) -> None:
    """``per_slice_gradients(params, xs, targets)`` must return each slice's own gradient (exercise 1)."""
    xs = jax.random.uniform(jax.random.key(3), (5, 16, 16))
    targets = (xs > 0.8).astype(jnp.float32)
    params = {"gain": jnp.array(4.0), "level": jnp.array(0.4)}
    got = per_slice_gradients(params, xs, targets)
    expect(isinstance(got, dict) and set(got) == {"gain", "level"}, 1,
           "return a dict with the same keys as params ('gain', 'level'), one entry per slice in each")
    for name in params:
        want = [float(jax.grad(_window_loss)(params, xs[i], targets[i])[name]) for i in range(len(xs))]
        expect_close(got[name], want, 1, f"the {name} gradients of 5 slices", rtol=1e-4, atol=1e-7)
    ok(1, "one gradient per slice, equal to jax.grad on each slice alone")


def check_trace_count(answer: int) -> None:
    """How often ``jax.jit(brightness, static_argnames="power")`` traces for the exercise's calls (exercise 2)."""
    traces = []

    def brightness(x, power):
        traces.append(None)
        return jnp.mean(x ** power)

    fast = jax.jit(brightness, static_argnames="power")
    x = jnp.ones((64, 64), jnp.float32)
    for arg, power in ((x, 2), (x, 2), (x, 3), (x * 2, 2), (x.astype(jnp.float16), 2), (x[:32], 3), (x[:32], 3)):
        fast(arg, power=power)
    expect(answer == len(traces), 2, f"you said {answer}; count again: a new trace needs a new shape, dtype or "
                                     "static value (values inside arrays never count)")
    ok(2, f"{len(traces)} traces: (64,64) f32 power 2, power 3, float16 power 2, (32,64) power 3")


def check_step_key(seed: int, epoch: int, step: int, key) -> None:
    """The augmentation key of ``step`` in ``epoch`` for ``seed`` (exercise 3), derived as
    ``jaxmri.training.classify.train_epoch`` does."""
    _, key_data = make_keys(seed)
    _, key_aug = jax.random.split(jax.random.fold_in(key_data, epoch))
    want = jax.random.key_data(jax.random.fold_in(key_aug, step))
    expect(bool(np.array_equal(jax.random.key_data(key), want)), 3,
           "not the key jaxmri uses: make_keys(seed)[1] -> fold_in(., epoch) -> split -> the second half -> "
           "fold_in(., step)")
    ok(3, f"seed {seed}, epoch {epoch}, step {step}: the same key train_epoch uses")


def check_pure_edit(logits_without_fc2_bias) -> None:
    """``logits_without_fc2_bias(model, images)``: the logits with fc2's bias zeroed, model unchanged (exercise 4)."""
    model = SmallCNN(2, image_size=32, rngs=nnx.Rngs(0))
    model.eval()
    model.fc2.bias[...] = jnp.array([0.5, -0.25])
    images = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3))
    before = jax.tree.map(jnp.copy, nnx.state(model))
    got = logits_without_fc2_bias(model, images)
    after = nnx.state(model)
    same = all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    expect(same, 4, "the model changed: edit a copy of the state (nnx.split, then a new tree), not the model")
    expect_close(got, model(images) - model.fc2.bias[...], 4, "logits", rtol=1e-5, atol=1e-6)
    ok(4, "logits without fc2's bias, and the model untouched")
