"""Does the one jit pattern cost speed? The U-Net train step as shipped (``nnx.jit`` lowered and compiled
with the CPU option by ``jaxmri.training.compiled.CompiledStep``) against the pattern it replaced (a
plain ``jax.jit`` over ``nnx.split((model, optimizer))`` with the same option), in one process,
alternating call by call (``unet_bench.time_interleaved``). Both run the same step body, so their
results are bit-identical; only the wrapper differs.

    python benchmarks/jit_pattern.py [--widths 32 64] [--rounds 7]
"""

import argparse
import os
import statistics

import jax
import numpy as np
from flax import nnx
from unet_bench import cpu_threads, fixed_batch, time_interleaved, unet_timing_flags

from jaxmri.models import UNet
from jaxmri.training import segment_steps
from jaxmri.training.optim import make_optimizer


def _split_jit_step():
    """The pre-refactor pattern: a pure function of ``nnx.split`` state under ``jax.jit(compiler_options=...)``."""
    body = segment_steps.plain_train_step.fun  # the undecorated step

    def pure(graphdef, state, batch, key, *, loss, max_angle):
        model, optimizer = nnx.merge(graphdef, state)
        out = body(model, optimizer, batch, key, loss=loss, max_angle=max_angle)
        return nnx.state((model, optimizer)), out

    jitted = jax.jit(pure, static_argnames=("graphdef", "loss", "max_angle"),
                     compiler_options=segment_steps.TRAIN_COMPILER_OPTIONS)

    def step(model, optimizer, batch, key, *, loss, max_angle):
        graphdef, state = nnx.split((model, optimizer))
        new_state, out = jitted(graphdef, state, batch, key, loss=loss, max_angle=max_angle)
        nnx.update((model, optimizer), new_state)
        return out

    return step


def make(step, width: int, batch: int, size: int):
    model = UNet(1, 1, width=width, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    images, masks = (jax.device_put(a) for a in fixed_batch(batch, size))
    data = {"image": images, "mask": masks, "weight": jax.device_put(np.ones(batch, np.float32))}
    return lambda: jax.block_until_ready(step(model, optimizer, data, None, loss="bce", max_angle=15.0))


def main(argv=None) -> None:
    args = unet_timing_flags(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args(argv)
    print(f"U-Net train step, batch {args.batch}, {args.size}x{args.size}x1, jax {jax.__version__}, "
          f"{cpu_threads()} cores, load {os.getloadavg()[0]:.1f}; options in use: {segment_steps.train_step.options}")
    print(f"{'width':>5} | {'nnx.jit + CompiledStep':>22} | {'jax.jit over nnx.split':>22} | ratio (old / new)")
    for width in args.widths:
        steps = {"new": make(segment_steps.train_step, width, args.batch, args.size),
                 "old": make(_split_jit_step(), width, args.batch, args.size)}
        times = time_interleaved(steps, args.warmup, args.rounds)
        new, old = (statistics.median(times[name]["wall"]) for name in ("new", "old"))
        print(f"{width:>5} | {new:>13.0f} ms/step | {old:>13.0f} ms/step | {old / new:.3f}"
              f"   (first call {times['new']['first']:.0f} / {times['old']['first']:.0f} ms)")


if __name__ == "__main__":
    main()
