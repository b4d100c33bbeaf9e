# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 0: JAX in an hour, on one MRI slice
#
# Every later lesson trains the paper's networks with `jaxmri`, whose steps are JAX programs. This lesson
# teaches the JAX underneath on something small enough to hold in your head: one brain MRI slice and a
# two-parameter function of it. By the end you will be able to
#
# 1. write pure functions of **pytrees** (nested dicts of arrays) and walk them with `jax.tree` and paths;
# 2. compose `jax.grad`, `jax.jit` and `jax.vmap`, and check a gradient against finite differences;
# 3. say what **tracing** is, what makes `jit` compile again, and why a Python `if` on an array fails;
# 4. draw random numbers with explicit **keys**: `split` vs `fold_in`, and why a key is never reused;
# 5. time JAX code correctly (asynchronous dispatch and `block_until_ready`);
# 6. take a Flax NNX model apart with `nnx.split` / `nnx.merge` / `nnx.update`: what `nnx.jit`, the
#    decorator on every `jaxmri` step, does for you.
#
# It covers no table of the paper yet; it is the toolbox for all of them (Sections 2 and 3 train with
# exactly these pieces). The only model used is the paper's `SmallCNN`, imported from `jaxmri`.

# %% [markdown]
# ## Setup
#
# One slice from the real Kaggle data when found (`$JAXMRI_DATA` or `../shared/data`), else from a
# phantom set. `jaxmri.data.dataset.load_image_folder` reads, crops to the brain and resizes every image
# (lesson 1 explains how); here we keep one gray slice as float32 in [0, 1].

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.models import SmallCNN  # noqa: E402
from jaxmri.training.classify import make_keys  # noqa: E402
from jaxmri.training.classify_steps import eval_step  # noqa: E402

from lesson_setup import QUICK, TUMOR, lesson_data, save  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 128
DATA, SOURCE, WORK = lesson_data("lesson00")
data = load_image_folder(DATA, image_size=IMAGE_SIZE, channels=1, progress=False)
tumor = data.class_names.index("yes")
slices = data.images[data.labels == tumor][:8, ..., 0].astype(np.float32) / 255.0  # (8, S, S)
x = jnp.asarray(slices[0])
print(f"one slice: {x.shape} {x.dtype}, intensities {float(x.min()):.2f} to {float(x.max()):.2f}")

# %% [markdown]
# ## 1. Pure functions of pytrees
#
# Our "model" is an intensity **window**: `sigmoid(gain * (x - level))` maps each pixel to 0 (dark) or 1
# (bright), with a soft edge. Its parameters are a **pytree**: any nesting of dicts, lists and tuples
# whose leaves are arrays. JAX functions take and return pytrees, and `jax.tree.map` applies a function
# leaf by leaf. A **pure** function's output depends only on its inputs (no globals changed, no
# randomness without a key): that is what lets JAX trace, compile and differentiate it.
#
# The target is the slice's brightest 10% of pixels (tumors are often bright on these scans), and the
# loss is the mean squared difference. Both functions are ordinary Python on `jax.numpy` arrays.

# %%
def window(params, x):
    """Soft threshold of intensities ``x`` at ``params["level"]``, sharpness ``params["gain"]``."""
    return jax.nn.sigmoid(params["gain"] * (x - params["level"]))


def loss(params, x, target):
    """Mean squared error of the window against a 0/1 target image."""
    return jnp.mean((window(params, x) - target) ** 2)


params = {"gain": jnp.array(5.0), "level": jnp.array(0.3)}
target = (x > jnp.quantile(x, 0.9)).astype(jnp.float32)
print(f"loss at the start: {float(loss(params, x, target)):.4f}")
print("leaves with their paths:", [(jax.tree_util.keystr(path), float(leaf))
                                   for path, leaf in jax.tree_util.tree_leaves_with_path(params)])
print("doubled, leaf by leaf:", jax.tree.map(lambda p: 2 * p, params))

# %% [markdown]
# Paths (`['gain']`) are how `jaxmri` names parameters too: lesson 2 prints SmallCNN's as `conv1.kernel`
# and so on, and `nnx` filters (lesson 3) select parameters by path.
#
# ## 2. `jax.grad`: derivatives of Python functions
#
# `jax.grad(loss)` is a new function that returns d loss / d params, **with the same pytree structure as
# `params`** (argument 0 by default; `argnums` picks others). We check it the way you should check any
# gradient you do not trust: against a central finite difference.

# %%
grad_loss = jax.grad(loss)
grads = grad_loss(params, x, target)
print("gradient:", {name: float(g) for name, g in grads.items()})
eps = 1e-3
for name in params:
    up = {**params, name: params[name] + eps}
    down = {**params, name: params[name] - eps}
    numeric = (loss(up, x, target) - loss(down, x, target)) / (2 * eps)
    print(f"  d loss / d {name}: jax.grad {float(grads[name]):+.6f}   finite difference {float(numeric):+.6f}")

# %% [markdown]
# Gradient descent is then a `tree.map` over parameters and gradients. To run many steps without a Python
# loop, `jax.lax.scan(step, carry, xs)` calls `step(carry, x)` once per element of `xs` and stacks what
# each call returns: it is how lesson 2 simulates 3000 optimizer steps in one call. (In `jaxmri` the
# optimizer is `optax`, and the step is compiled once per task, lessons 2 and 4.)

# %%
def descend(params, _):
    """One gradient-descent step on the window loss; also returns the loss before it."""
    value, g = jax.value_and_grad(loss)(params, x, target)
    return jax.tree.map(lambda p, d: p - 1.0 * d, params, g), value  # learning rate 1


fitted, losses = jax.lax.scan(descend, params, None, length=300)
print(f"after 300 steps: loss {float(loss(fitted, x, target)):.4f}, "
      + ", ".join(f"{k} {float(v):.3f}" for k, v in fitted.items()))

fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
for ax, image, title in zip(axes[:3], (x, target, window(fitted, x)), ("slice", "target: top 10%", "fitted window")):
    ax.imshow(np.asarray(image), vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_axis_off()
axes[3].plot(np.asarray(losses), color=TUMOR)
axes[3].set(xlabel="step", ylabel="loss", title="jax.lax.scan of 300 steps")
save(fig, "00_window_fit.png")

# %% [markdown]
# ## 3. `jax.jit`: tracing, compiling, and what triggers a recompile
#
# `jax.jit(f)` does not run `f` on your numbers at first. It calls `f` once with **tracers**, abstract
# stand-ins that carry only a shape and a dtype, records every operation into a program (a *jaxpr*),
# hands that to the XLA compiler, and caches the compiled program under the arguments' shapes and dtypes.
# Later calls with the same shapes and dtypes run the cached program directly; Python code inside `f`
# (a `print`, a counter) runs only while tracing. So a changed shape, dtype, or **static** argument
# (a Python value baked into the program) means a new trace and a new compile.

# %%
traces = []


def brightness(x, power):
    """Mean of ``x ** power``; records each time it is traced."""
    traces.append((x.shape, str(x.dtype), power))
    return jnp.mean(x ** power)


fast = jax.jit(brightness, static_argnames="power")
timings = []
for label, args in (("first call", (x, 2)), ("same shape again", (x, 2)), ("new static power", (x, 3)),
                    ("new shape (half size)", (x[::2, ::2], 2)), ("same as the first", (x, 2))):
    start = time.perf_counter()
    jax.block_until_ready(fast(args[0], power=args[1]))
    timings.append((label, time.perf_counter() - start))
    print(f"{label:24s} {1e3 * timings[-1][1]:8.2f} ms   traces so far: {len(traces)}")
print("jaxpr of one trace:", jax.make_jaxpr(lambda v: brightness(v, 2))(x).pretty_print().splitlines()[1:3])

# %% [markdown]
# `jaxmri` keeps every call's shapes fixed on purpose: the last batch of an epoch is **padded** to the
# full batch size with weight-0 rows (`jaxmri.data.batching.epoch_batches`), so a whole run compiles each
# step once, and every run prints how long its first epoch spent compiling.
#
# Tracing has one more consequence: inside `jit`, an array has no value yet, so Python cannot branch on
# it. `if x.mean() > 0.5:` raises a `TracerBoolConversionError`; write the choice as data instead
# (`jnp.where`, or `jax.lax.cond`).

# %%
def brighten_if_dark(x):
    """Python control flow on a traced value: fails under jit."""
    if x.mean() < 0.5:
        return x * 2
    return x


try:
    jax.jit(brighten_if_dark)(x)
except jax.errors.TracerBoolConversionError as err:
    print("TracerBoolConversionError:", str(err).splitlines()[0][:100])
as_data = jax.jit(lambda v: jnp.where(v.mean() < 0.5, v * 2, v))
print("with jnp.where it compiles; mean after:", float(as_data(x).mean()))

# %% [markdown]
# ## 4. `jax.vmap`, and composing the three
#
# `jax.vmap(f)` turns a function of one example into a function of a batch, by adding a leading axis to
# every operation: no loop, no rewrite. `in_axes` says which arguments carry the batch axis (`None`: shared).
# The transformations compose: `jax.jit(jax.vmap(jax.grad(loss)))` is a compiled function that returns
# one gradient **per slice**, which a batched loss (the mean over slices) would average away.

# %%
batch_x = jnp.asarray(slices)
batch_target = (batch_x > jnp.quantile(batch_x, 0.9, axis=(1, 2), keepdims=True)).astype(jnp.float32)
per_slice = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(params, batch_x, batch_target)
print({name: np.round(np.asarray(g), 4).tolist() for name, g in per_slice.items()})
mean_of_grads = jax.tree.map(lambda g: g.mean(0), per_slice)
grad_of_mean = jax.grad(lambda p: jnp.mean(jax.vmap(loss, in_axes=(None, 0, 0))(p, batch_x, batch_target)))(params)
print("mean of per-slice gradients equals the gradient of the mean loss:",
      all(bool(jnp.allclose(mean_of_grads[k], grad_of_mean[k], rtol=1e-5)) for k in params))

# %% [markdown]
# ## 5. Random numbers are explicit: keys, `split` and `fold_in`
#
# JAX has no hidden global random state. A **key** (`jax.random.key(seed)`) is a value you pass in, and
# the same key always gives the same numbers. To get independent streams you derive new keys:
#
# - `jax.random.split(key, n)`: n new keys at once, for things you create together;
# - `jax.random.fold_in(key, i)`: the key for item `i` (an epoch, a step), computed on demand, with no
#   state to carry. Item 7's key does not depend on whether items 0-6 were drawn, which is what makes
#   a resumed run (lesson 10) draw exactly what the uninterrupted run drew.
#
# Never use a key twice for two things: both draws are then the *same* draw. Below, "augmentation noise"
# for three copies of the slice: reused key (identical noise), split keys and fold_in keys (independent).

# %%
key = jax.random.key(0)
reused = [jax.random.normal(key, x.shape) for _ in range(3)]
split = [jax.random.normal(k, x.shape) for k in jax.random.split(key, 3)]
folded = [jax.random.normal(jax.random.fold_in(key, i), x.shape) for i in range(3)]
fig, axes = plt.subplots(3, 3, figsize=(5, 5.2))
for row, (name, draws) in enumerate((("same key reused", reused), ("split(key, 4)", split),
                                     ("fold_in(key, i)", folded))):
    for col, noise in enumerate(draws):
        axes[row, col].imshow(np.asarray(jnp.clip(x + 0.15 * noise, 0, 1)), vmin=0, vmax=1)
        axes[row, col].set_axis_off()
        axes[row, col].set_title(f"{name}, #{col}", fontsize=8)
save(fig, "00_keys.png")
print("reused key: all three identical:", all(bool(jnp.array_equal(reused[0], r)) for r in reused))

# %% [markdown]
# `jaxmri` derives every random number of a run from its `--seed` this way
# (`jaxmri.training.classify.make_keys`): the seed's key is split into `key_init` (initial weights) and
# `key_data`; epoch `e` uses `fold_in(key_data, e)`, split into a shuffle key and an augmentation key,
# and step `s` augments with `fold_in(key_aug, s)`. So a run is a pure function of its config.

# %%
key_init, key_data = make_keys(0)
epoch_key = jax.random.fold_in(key_data, 3)
key_perm, key_aug = jax.random.split(epoch_key)
print("epoch 3 shuffle:", np.asarray(jax.random.permutation(key_perm, 10)))
print("epoch 3 shuffle again:", np.asarray(jax.random.permutation(key_perm, 10)), "(same key, same order)")

# %% [markdown]
# ## 6. Asynchronous dispatch: time with `block_until_ready`
#
# A JAX call returns as soon as the work is *queued*; the array is filled in later, and Python goes on.
# That hides latency, and it makes naive timing lie: `time.perf_counter()` around a call measures the
# queuing. `jax.block_until_ready(out)` waits for the result (so do `float(out)` and `np.asarray(out)`,
# which need the numbers). `jaxmri`'s epoch loops call `float()` on each step's loss, one sync per step.

# %%
big = jax.random.normal(jax.random.key(1), (1024, 1024) if QUICK else (2048, 2048))
matmul = jax.jit(lambda a: a @ a)
jax.block_until_ready(matmul(big))  # compile first, so both timings below are of the compiled program
start = time.perf_counter()
out = matmul(big)
queued = time.perf_counter() - start
jax.block_until_ready(out)
finished = time.perf_counter() - start
print(f"returned after {1e3 * queued:.2f} ms; result ready after {1e3 * finished:.2f} ms")

# %% [markdown]
# ## 7. Flax NNX, taken apart: `split`, `merge`, `update`
#
# `jax.jit` and `jax.grad` want pure functions of pytrees, but `SmallCNN(...)` is a Python object whose
# weights change in place. NNX bridges the two:
#
# - `graphdef, state = nnx.split(model)`: the model's static structure (`graphdef`: layers, shapes,
#   which function to call) and its arrays (`state`: an `nnx.State` pytree of Variables, by path);
# - `nnx.merge(graphdef, state)`: a model object again, from the two halves;
# - `nnx.update(model, state)`: write arrays back into an existing model.
#
# So "the model as a pure function" is `lambda state, images: nnx.merge(graphdef, state)(images)`, which
# `jax.jit` compiles like any function. `nnx.jit`, the decorator on every `jaxmri` step
# (`jaxmri.training.classify_steps`), does exactly this for you: split the models you pass, `jax.jit`
# the pure function, merge inside, and `update` the objects with whatever the step changed. `nnx.Rngs`
# holds keys for named streams (`params` for initial weights, `dropout`), with counters that advance
# every draw: `jaxmri` builds it from `key_init`.

# %%
model = SmallCNN(2, image_size=IMAGE_SIZE, rngs=nnx.Rngs(params=key_init, dropout=jax.random.fold_in(key_init, 1)))
model.eval()  # dropout off
graphdef, state = nnx.split(model)
print("state paths:", [".".join(map(str, path)) for path, _ in nnx.to_flat_state(state)][:6], "...")


def pure_logits(state, images):
    """SmallCNN as a pure function of its state: merge, call."""
    return nnx.merge(graphdef, state)(images)


images = jnp.repeat(batch_x[:4, ..., None], 3, axis=-1)  # SmallCNN takes RGB: the gray slice 3 times
ours = jax.jit(pure_logits)(state, images)
library = eval_step(model, {"image": (np.asarray(images) * 255).round().astype(np.uint8)})
print("pure function vs the library's nnx.jit eval_step, max difference:",
      f"{float(jnp.max(jnp.abs(ours - library))):.2e}")

weights = nnx.state(model, nnx.Param)  # only the parameters (a filter: lesson 3)
saved = jax.tree.map(jnp.copy, weights)  # new arrays: a real snapshot (see below)
nnx.update(model, jax.tree.map(jnp.zeros_like, weights))  # every parameter zero
print("after nnx.update with zeros, logits:", np.asarray(model(images))[0], "(every weight is zero)")
print("and `state` from nnx.split saw the change too:",
      float(jnp.abs(state["fc1"]["kernel"][...]).sum()) == 0.0)
nnx.update(model, saved)  # back, from the snapshot
print("restored from the snapshot:", bool(jnp.allclose(model(images), ours, atol=1e-6)))

# %% [markdown]
# Note the trap in the middle: the `state` that `nnx.split` returned holds the model's **own** Variable
# objects, not copies, so changing the model changed `state` as well. A snapshot needs new arrays
# (`jax.tree.map(jnp.copy, ...)`), which is also why `jaxmri` saves checkpoints from `nnx.state(model)`
# straight to disk (lesson 10) rather than keeping an old state in memory.
#
# (The library's `eval_step` takes uint8 images and converts them itself, `jaxmri.data.augment.to_float`,
# which is why the comparison rounds to uint8 first: the tiny difference above is that rounding.)
#
# That is all the JAX the course needs: lesson 1 builds the data pipeline, lesson 2 opens the
# `nnx.jit` train step, and lesson 9 returns to `jit`'s cache and shards a step over several devices.

# %% [markdown]
# ## Exercises
#
# 1. Write `per_slice_gradients(params, xs, targets)` that returns one gradient pytree per slice, using
#    `jax.vmap` over `jax.grad(loss)` (as in section 4, but yours), and check it with
#    `from checks.lesson_00 import check_per_slice_gradients; check_per_slice_gradients(per_slice_gradients)`.
#    You should see the gradients of 8 slices, each with a `gain` and a `level` entry.
# 2. Predict how many times `brightness` is traced by this sequence of calls to
#    `jax.jit(brightness, static_argnames="power")`: `(x, 2)`, `(x, 2)`, `(x, 3)`, `(x * 2, 2)`,
#    `(x.astype(jnp.float16), 2)`, `(x[:32], 3)`, `(x[:32], 3)`. Write your number down first, then check it
#    with `check_trace_count(your_number)`. You should find that only shape, dtype and static values
#    count, never the values inside the array.
# 3. Derive, with `make_keys`, `fold_in` and `split` only, the key that `jaxmri` uses to augment step 5 of
#    epoch 3 (0-based) for `--seed 7`, and check it with `check_step_key(7, 3, 5, your_key)`. You should
#    need four key operations.
# 4. Using only `nnx.split` / `nnx.merge`, write `logits_without_fc2_bias(model, images)` that returns
#    SmallCNN's logits with `fc2`'s bias set to zero, **without changing `model`**. Check it with
#    `check_pure_edit(logits_without_fc2_bias)`. You should see the logits move by exactly the bias.
