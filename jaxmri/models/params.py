"""Counting and building parameters: the models' sizes (README, lessons, tests, runs), and building a
model without materialising the parameters a weights file will fill."""

from functools import partial

import jax
from flax import nnx


def count_params(model: nnx.Module, wrt=nnx.Param) -> int:
    """Number of scalars in ``model``'s Variables selected by ``wrt`` (default: every ``nnx.Param``).

    Pass ``model.trainable_filter()`` (or an optimizer's ``wrt``) to count only what trains. Works on an
    abstract model from ``nnx.eval_shape`` too (it reads shapes, not values).
    """
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, wrt)))


def param_name(path) -> str:
    """A Variable's path as a dotted name: ``("convs", 0, "kernel")`` -> ``"convs.0.kernel"``."""
    return ".".join(map(str, path))


def _not_in(names: frozenset[str]):
    """Every Variable except the Params named in ``names`` (RNG streams included)."""
    return nnx.Not(nnx.All(nnx.Param, lambda path, _: param_name(path) in names))


@partial(nnx.jit, static_argnames=("constructor", "skip"))
def _initial_values(rngs: nnx.Rngs, *, constructor, skip: frozenset[str]) -> nnx.State:
    # One compiled program builds the module and returns only what is not skipped: XLA drops every
    # skipped initializer, and the caller's ``rngs`` advance exactly as in an eager construction.
    return nnx.state(constructor(rngs=rngs), _not_in(skip))


def build_except(constructor, rngs: nnx.Rngs, skip=frozenset()) -> nnx.Module:
    """``constructor(rngs=rngs)``, except that the Params named in ``skip`` are left abstract.

    The module is traced abstractly (``nnx.eval_shape``), then every other Variable (the parameters not
    skipped, the dropout streams) is computed in one jit-compiled program, bit for bit what the eager
    ``constructor(rngs=rngs)`` gives, with ``rngs`` advanced the same way. The skipped Params stay
    ``jax.ShapeDtypeStruct`` placeholders for the caller to fill (``nnx.update``) from a weights file: the
    full VGG19 then builds in well under a second instead of compiling an initializer per shape and
    drawing 548 MB of random numbers (about 9-17 s). With ``skip`` empty it is a fast eager build.

    ``constructor`` must be hashable (a class, or a ``functools.partial`` of one with hashable arguments).
    """
    skip = frozenset(skip)
    model = nnx.eval_shape(lambda: constructor(rngs=nnx.clone(rngs)))
    nnx.update(model, _initial_values(rngs, constructor=constructor, skip=skip))
    return model
