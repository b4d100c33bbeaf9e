"""Counting parameters: the one place the models' sizes are measured (README, lessons, tests, runs)."""

import jax
from flax import nnx


def count_params(model: nnx.Module, wrt=nnx.Param) -> int:
    """Number of scalars in ``model``'s Variables selected by ``wrt`` (default: every ``nnx.Param``).

    Pass ``model.trainable_filter()`` (or an optimizer's ``wrt``) to count only what trains. Works on an
    abstract model from ``nnx.eval_shape`` too (it reads shapes, not values).
    """
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, wrt)))
