# %% [markdown]
# # Lesson 0, worked solutions
#
# Run it like the lesson (`python lessons/solutions/00_jax_in_an_hour.py`); each exercise ends with its
# checker's `exercise K: ok` line.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from checks.lesson_00 import check_per_slice_gradients, check_pure_edit, check_step_key, check_trace_count  # noqa: E402
from jaxmri.training.classify import make_keys  # noqa: E402


def loss(params, x, target):
    """The lesson's window loss."""
    return jnp.mean((jax.nn.sigmoid(params["gain"] * (x - params["level"])) - target) ** 2)


# %% [markdown]
# ## 1. Per-slice gradients
#
# `jax.grad(loss)` differentiates one slice's loss; `jax.vmap` maps it over the leading axis of `xs` and
# `targets` while sharing `params` (`in_axes=None` for it). The result has the structure of `params`,
# each leaf with a leading axis of one entry per slice.

# %%
def per_slice_gradients(params, xs, targets):
    return jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, xs, targets)


check_per_slice_gradients(per_slice_gradients)

# %% [markdown]
# ## 2. Counting traces
#
# `(x, 2)` traces (1); `(x, 2)` again is cached; `(x, 3)` is a new static value (2); `(x * 2, 2)` has the
# same shape and dtype as the first, so it is cached although the numbers differ; `float16` is a new
# dtype (3); `(x[:32], 3)` is a new shape (4); and the same again is cached. Four.

# %%
check_trace_count(4)

# %% [markdown]
# ## 3. The key of one augmentation step
#
# `make_keys(seed)` splits the seed's key (1 operation, inside it); then `fold_in(key_data, epoch)` (2),
# `split` into the shuffle and augmentation keys (3), and `fold_in(key_aug, step)` (4).

# %%
_, key_data = make_keys(7)
key_perm, key_aug = jax.random.split(jax.random.fold_in(key_data, 3))
check_step_key(7, 3, 5, jax.random.fold_in(key_aug, 5))

# %% [markdown]
# ## 4. A pure edit with `split` / `merge`
#
# Split the model, build a **new** state in which fc2's bias is zero (a `tree.map` makes new arrays, so
# the model's own Variables are never touched), merge a throw-away model from it and call that.

# %%
def logits_without_fc2_bias(model, images):
    graphdef, state = nnx.split(model)
    copy = jax.tree.map(jnp.copy, state)
    copy["fc2"]["bias"][...] = jnp.zeros_like(copy["fc2"]["bias"][...])
    return nnx.merge(graphdef, copy)(images)


check_pure_edit(logits_without_fc2_bias)
