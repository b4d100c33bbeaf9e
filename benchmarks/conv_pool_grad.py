"""SmallCNN's first-layer kernel gradient two ways: per-image matrix products against XLA's convolution.

``jaxmri.models.conv_pool`` computes the blocked first layer's kernel gradient on CPU as one matrix
product per image (``_kernel_grad``); GPU and TPU programs use XLA's weight-gradient convolution
(``_conv_kernel_grad``). This script times both on the CPU, alternating round by round in one process:

  part      the kernel gradient alone (32 x 224 x 224 x 3 -> 16, the phases' cotangent given), compiled
            with the classification train step's CPU option;
  step      the library's whole SmallCNN train step (batch 32), once as it is and once with the
            first layer's backward pointed at XLA's convolution.

  python benchmarks/conv_pool_grad.py --tune-malloc     # what the jaxmri commands set up; about a minute
"""

import argparse
import statistics
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from train_step import LR, WEIGHT_DECAY, classifier_batch, cpu_model
from unet_bench import time_interleaved

from jaxmri.allocator import tune_malloc
from jaxmri.models import SmallCNN, conv_pool
from jaxmri.models.layers import normalize
from jaxmri.training.classify_steps import train_step
from jaxmri.training.compiled import YNN_REDUCE_ONLY, cpu_compiler_options
from jaxmri.training.optim import make_optimizer


def _backward_with_the_convolution(residuals, g):
    """The library's backward, its CPU branch pointed at XLA's weight-gradient convolution."""
    with mock.patch.object(conv_pool, "_kernel_grad", conv_pool._conv_kernel_grad):
        return conv_pool._conv_pool_bwd(residuals, g)


conv_pool_with_convolution_gradient = jax.custom_vjp(conv_pool.conv3x3_relu_max_pool_2x2.fun)
conv_pool_with_convolution_gradient.defvjp(conv_pool._conv_pool_fwd, _backward_with_the_convolution)


class SmallCNNConvolutionGradient(SmallCNN):
    """SmallCNN whose first layer's kernel gradient is XLA's convolution (a separate class: its own trace)."""

    def last_conv(self, x):
        x = conv_pool_with_convolution_gradient(normalize(x), self.conv1.kernel[...], self.conv1.bias[...])
        return nnx.relu(self.conv2(x))


def part_steps(batch: int) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, 224, 224, 3), dtype=np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, 3, 16)).astype(np.float32))
    g_phases = jnp.asarray(rng.standard_normal((batch, 112, 112, 2, 2, 16)).astype(np.float32))
    options = cpu_compiler_options(YNN_REDUCE_ONLY)
    compiled = {name: jax.jit(fn).lower(x, kernel, g_phases).compile(options)
                for name, fn in (("products", conv_pool._kernel_grad), ("convolution", conv_pool._conv_kernel_grad))}
    np.testing.assert_allclose(compiled["products"](x, kernel, g_phases), compiled["convolution"](x, kernel, g_phases),
                               rtol=1e-4, atol=1e-3)
    return {name: (lambda c=c: jax.block_until_ready(c(x, kernel, g_phases))) for name, c in compiled.items()}


def whole_steps(batch: int) -> dict:
    device_batch = {k: jnp.asarray(v) for k, v in classifier_batch(batch).items()}
    steps, convolutions = {}, {}
    for name, cls in (("products", SmallCNN), ("convolution", SmallCNNConvolutionGradient)):
        model = cls(2, rngs=nnx.Rngs(0))
        optimizer = make_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY)
        steps[name] = lambda m=model, o=optimizer: jax.block_until_ready(train_step(m, o, device_batch, None))
        convolutions[name] = train_step.compiled_for(model, optimizer, device_batch, None).as_text().count(" convolution(")
    # the check that the patch reached the trace: one more convolution (the first layer's weight gradient)
    assert convolutions["convolution"] == convolutions["products"] + 1, convolutions
    return steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tune-malloc", action="store_true", help="the jaxmri commands' allocator settings")
    args = parser.parse_args(argv)
    malloc = tune_malloc() if args.tune_malloc else "glibc defaults"
    print(f"CPU: {cpu_model()}; jax {jax.__version__}; malloc: {malloc}; batch {args.batch}; "
          f"median of {args.rounds} alternating rounds")
    for label, steps in (("kernel gradient alone", part_steps(args.batch)), ("SmallCNN train step", whole_steps(args.batch))):
        times = time_interleaved(steps, 2, args.rounds)
        ms = {name: statistics.median(t["wall"]) for name, t in times.items()}
        print(f"{label}: products {ms['products']:.1f} ms, XLA's convolution {ms['convolution']:.1f} ms "
              f"({ms['convolution'] / ms['products']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
