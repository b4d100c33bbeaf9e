"""Winograd F(2x2, 3x3) against XLA's direct convolution on this CPU, per VGG19 layer and whole forward.

In one process, alternating round by round:
  layers   every distinct conv shape of VGG19 at 224 x 224 (batch 8): ``layers.conv3x3_same`` + bias + ReLU
           against ``conv3x3_winograd`` + bias + ReLU, each jitted alone and compiled with the train step's
           CPU options (``classify_steps.TRAIN_COMPILER_OPTIONS``); the largest difference relative to the
           output's largest value; which one ``conv3x3`` picks on CPU;
  forward  the frozen VGG19 forward (``classify_steps.eval_step``) with ``winograd=True`` (the library's
           default) and ``winograd=False`` (XLA's convolution everywhere), same weights, and the largest
           relative difference of their features;
  step     the frozen VGG19 train step (``classify_steps.train_step``, no augmentation) both ways, and
           Winograd with the kernels transformed once beforehand (``VGG19Classifier.winograd_cache``, as
           ``training.classify.train_epoch`` runs it) instead of in every step.

ratio = direct ms / Winograd ms (> 1: Winograd faster). ``--tune-malloc`` applies the allocator
settings of the ``python -m jaxmri...`` commands.

Usage:
  python benchmarks/winograd.py                 # layers, forward, step; about 4 minutes on 2 cores
  python benchmarks/winograd.py --parts layers  # the per-layer table only
"""

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from roofline import as_trained
from train_step import classifier_batch, cpu_model
from unet_bench import time_interleaved

from jaxmri.allocator import tune_malloc
from jaxmri.models import VGG19Classifier
from jaxmri.models.vgg19 import VGG19_BLOCKS, VGG19_WIDTHS
from jaxmri.models.layers import conv3x3_same
from jaxmri.models.winograd import conv3x3_winograd, winograd_pays
from jaxmri.training import classify_steps
from jaxmri.training.compiled import cpu_compiler_options
from jaxmri.training.optim import make_optimizer

PARTS = ("layers", "forward", "step")


def layer_shapes(size: int = 224) -> list[tuple[str, int, int, int, int]]:
    """(name of its first layer, input side, C_in, C_out, how many layers) for every distinct VGG19 conv shape."""
    rows, c_in = {}, 3
    for block, (n_convs, width) in enumerate(zip(VGG19_BLOCKS, VGG19_WIDTHS)):
        for k in range(n_convs):
            first, count = rows.get((size, c_in, width), (f"conv{block + 1}_{k + 1}", 0))
            rows[(size, c_in, width)] = (first, count + 1)
            c_in = width
        size //= 2
    return [(name, *shape, count) for shape, (name, count) in rows.items()]


def relative_difference(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def median_ms(times: dict) -> dict:
    return {name: statistics.median(t["wall"]) for name, t in times.items()}


def layers(batch: int, rounds: int) -> None:
    options = cpu_compiler_options(classify_steps.TRAIN_COMPILER_OPTIONS)
    print(f"\nper layer, batch {batch}: conv + bias + ReLU jitted alone with {options or 'no options'}; "
          f"median of {rounds} alternating rounds")
    print(f"{'layer':<8} {'input':>14} {'out':>4} {'direct ms':>9} {'wino ms':>8} {'ratio':>5} {'rel diff':>8}  conv3x3 picks")
    rng = np.random.default_rng(0)
    total = {"direct": 0.0, "winograd": 0.0, "picked": 0.0}
    for name, size, c_in, c_out, repeat in layer_shapes():
        x = jnp.asarray(np.maximum(rng.standard_normal((batch, size, size, c_in)), 0), jnp.float32)
        kernel = jnp.asarray(rng.standard_normal((3, 3, c_in, c_out)) * np.sqrt(2 / (9 * c_out)), jnp.float32)
        bias = jnp.asarray(rng.standard_normal(c_out) * 0.1, jnp.float32)
        fns = {name: jax.jit(lambda x, k, b, conv=conv: jax.nn.relu(conv(x, k) + b)).lower(x, kernel, bias).compile(options)
               for name, conv in (("direct", conv3x3_same), ("winograd", conv3x3_winograd))}
        diff = relative_difference(fns["direct"](x, kernel, bias), fns["winograd"](x, kernel, bias))
        ms = median_ms(time_interleaved({n: (lambda f=f: jax.block_until_ready(f(x, kernel, bias))) for n, f in fns.items()}, 2, rounds))
        picked = "winograd" if winograd_pays(kernel.shape) else "direct"
        for key in ("direct", "winograd"):
            total[key] += repeat * ms[key]
        total["picked"] += repeat * ms[picked]
        print(f"{name:<8} {f'{size}x{size}x{c_in}':>14} {c_out:>4} {ms['direct']:>9.1f} {ms['winograd']:>8.1f} "
              f"{ms['direct'] / ms['winograd']:>5.2f} {diff:>8.1e}  {picked}" + (f" (x{repeat})" if repeat > 1 else ""))
    print(f"sum over the 16 layers: direct {total['direct']:.0f} ms, all Winograd {total['winograd']:.0f} ms, "
          f"as conv3x3 picks {total['picked']:.0f} ms ({total['direct'] / total['picked']:.2f}x)")


def whole(part: str, batch: int, rounds: int) -> None:
    data = {k: jnp.asarray(v) for k, v in classifier_batch(batch).items()}
    models = {}
    for winograd in (True, False):
        model = VGG19Classifier(2, winograd=winograd, rngs=nnx.Rngs(0))  # same seed: same weights
        model.eval() if part == "forward" else model.train()
        models["winograd" if winograd else "direct"] = model
    if part == "forward":
        steps = {n: (lambda m=m: jax.block_until_ready(classify_steps.eval_step(m, data))) for n, m in models.items()}
        out = {n: classify_steps.eval_step(m, data) for n, m in models.items()}
        features = {n: nnx.jit(lambda m, x: m.features(x))(m, data["image"].astype(jnp.float32) / 255) for n, m in models.items()}
        note = (f"logits rel diff {relative_difference(out['direct'], out['winograd']):.1e}, "
                f"features rel diff {relative_difference(features['direct'], features['winograd']):.1e}")
    else:
        models["frozen kernels"] = VGG19Classifier(2, rngs=nnx.Rngs(0))
        optimizers = {n: make_optimizer(m, lr=1e-3, weight_decay=4e-4) for n, m in models.items()}
        as_trained(models["frozen kernels"], optimizers["frozen kernels"])  # as classify.train_epoch runs it
        steps = {n: (lambda n=n: jax.block_until_ready(classify_steps.train_step(models[n], optimizers[n], data, None)))
                 for n in models}
        note = "train step, no augmentation, dropout on"
    times = time_interleaved(steps, 2, rounds)
    ms = median_ms(times)
    cpu = {name: statistics.median(t["cpu"]) for name, t in times.items()}
    print(f"\nVGG19 {part}, batch {batch}, median of {rounds} alternating rounds ({note}); ratio = direct / this:")
    for name in ms:
        print(f"  {name:<15} {ms[name]:5.0f} ms (cpu {cpu[name]:5.0f})  {ms['direct'] / ms[name]:.2f}x wall, "
              f"{cpu['direct'] / cpu[name]:.2f}x cpu")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tune-malloc", action="store_true", help="the jaxmri commands' allocator settings")
    args = parser.parse_args(argv)
    malloc = tune_malloc() if args.tune_malloc else "glibc defaults"
    print(f"CPU: {cpu_model()}; jax {jax.__version__}, backend {jax.default_backend()}; malloc: {malloc}")
    for part in args.parts.split(","):
        if part not in PARTS:
            parser.error(f"--parts: unknown part {part!r}; choose from {','.join(PARTS)}.")
        layers(args.batch, args.rounds) if part == "layers" else whole(part, args.batch, args.rounds)


if __name__ == "__main__":
    main()
