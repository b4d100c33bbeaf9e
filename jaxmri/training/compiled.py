"""An ``nnx.jit`` step compiled with XLA compiler options that apply to the CPU backend only.

Every step in ``jaxmri.training`` is written one way: a module-level function under
``nnx.jit(graph_updates=False)``. ``nnx.jit`` takes no ``compiler_options``, so a step that needs
one (the train steps: ``YNN_WITHOUT_CONVOLUTIONS`` for the U-Net, ``YNN_REDUCE_ONLY`` for the
classifiers) is wrapped in
``CompiledStep``: it lowers the same ``nnx.jit`` function, compiles it with the options, and keeps one
executable per input signature, exactly as ``jax.jit``'s own cache would.

The options are checked once per process (``cpu_compiler_options``): on a backend other than CPU, or
with a jaxlib that rejects them, the step is the plain ``nnx.jit`` function, so no CPU-only option
ever reaches a GPU or TPU compiler.

    >>> step = CompiledStep(train_step_jit, {"xla_cpu_...": "..."}, static_argnames=("loss",))  # doctest: +SKIP
    >>> step(model, optimizer, batch, key, loss="bce")                                          # doctest: +SKIP
"""

import functools

import jax
import jax.numpy as jnp

# XLA's CPU backend (jax 0.12) hands every convolution to YNNPACK by default. YNNPACK's weight-gradient
# convolutions are slow on large maps with few channels (the U-Net's, SmallCNN's), so the train steps
# are compiled with YNNPACK fusion limited to elementwise and reduce fusions: the convolutions, the
# slow weight gradients among them, then run on XLA's own Eigen kernels. Measured with
# ``benchmarks/compile_options.py`` (same process, alternating, 2 cores): U-Net width 32 train step
# 1.39-1.42x faster than XLA's default, SmallCNN 1.13-1.18x, frozen VGG19 0.98-1.01x (its backward is
# pruned, so the default's forward convolutions are as good). The eval and predict steps keep the
# default. Experimental: on another backend, or a jaxlib that knows neither the option nor its values,
# the steps are the plain ``nnx.jit`` (``cpu_compiler_options``).
YNN_WITHOUT_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE",
}

# The classification train step also leaves elementwise fusions to XLA: YNNPACK's elementwise fusion
# makes the augmentation (bilinear rotation, flips, brightness on a 32x224x224x3 batch) 3.3x slower
# (``augment`` alone: 119-122 ms with ELTWISE,REDUCE, 118 ms ELTWISE alone, 33-41 ms reduce-only or
# no YNNPACK; 2 cores, AMD Zen 4). Whole SmallCNN step with augmentation, same process, alternating:
# 1.22x and 1.36x faster than ``YNN_WITHOUT_CONVOLUTIONS`` in two runs, 1.06-1.19x faster than no
# YNNPACK at all; frozen VGG19 with augmentation 1.00-1.02x. The U-Net step (no augmentation by
# default) measured 0.94-1.01x with it, so it keeps ``YNN_WITHOUT_CONVOLUTIONS``.
YNN_REDUCE_ONLY = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE",
}


@functools.cache
def _accepted(options: tuple[tuple[str, str], ...], backend: str) -> bool:
    if backend != "cpu":
        return False
    try:
        jax.jit(lambda x: x + 1).lower(jnp.float32(0)).compile(dict(options))
    except jax.errors.JaxRuntimeError:  # "No such compile option" or a value this XLA does not parse
        return False
    return True


def cpu_compiler_options(options: dict[str, str]) -> dict[str, str]:
    """``options`` when the default backend is CPU and this jaxlib compiles with them, else ``{}``.

    Checked once per (options, backend) by compiling a one-line function, before any real step.
    """
    items = tuple(sorted(options.items()))
    return dict(items) if _accepted(items, jax.default_backend()) else {}


def _signature(args, kwargs) -> tuple:
    """What decides whether a compiled executable fits: the pytree structure and every leaf's type."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    return treedef, tuple(jax.typeof(leaf) for leaf in leaves)


class CompiledStep:
    """``jitted`` (an ``nnx.jit`` function) compiled with ``options`` on CPU; called like ``jitted``.

    Args:
      jitted: the step, decorated with ``nnx.jit(graph_updates=False, static_argnames=...)``.
      options: XLA compiler options; dropped (with no error) where ``cpu_compiler_options`` drops them.
      static_argnames: the same names ``jitted`` declares static; they pick the executable and are
        not passed to it.
    """

    def __init__(self, jitted, options: dict[str, str], *, static_argnames: tuple[str, ...] = ()):
        functools.update_wrapper(self, jitted)
        self.jitted, self.requested_options, self.static_argnames = jitted, dict(options), tuple(static_argnames)
        self._executables = {}

    @property
    def options(self) -> dict[str, str]:
        """The options actually compiled with here (empty: this is the plain ``nnx.jit`` step)."""
        return cpu_compiler_options(self.requested_options)

    def compiled_for(self, *args, **kwargs):
        """The executable for these inputs (compiled on first use), e.g. to read ``.as_text()``."""
        static = {name: kwargs.pop(name) for name in self.static_argnames if name in kwargs}
        key = (_signature(args, kwargs), tuple(sorted(static.items())))
        if key not in self._executables:
            self._executables[key] = self.jitted.lower(*args, **kwargs, **static).compile(self.options)
        return self._executables[key]

    def __call__(self, *args, **kwargs):
        if not self.options:
            return self.jitted(*args, **kwargs)
        dynamic = {name: value for name, value in kwargs.items() if name not in self.static_argnames}
        return self.compiled_for(*args, **kwargs)(*args, **dynamic)

    def cache_size(self) -> int:
        """How many executables were compiled (one per input signature and static arguments)."""
        return len(self._executables)
