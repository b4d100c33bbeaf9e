"""Where the U-Net's train step spends its convolution time: each 3x3 layer's three parts, jaxmri against PyTorch.

A train step runs every 3x3 convolution three times: the forward, the weight gradient and the input
gradient (the first layer's is pruned). This script times each part of each of the U-Net's 18 3x3
layers alone, at the layer's real shape (batch 4, 256 x 256 input), jaxmri's side compiled with the
U-Net train step's CPU option (``segment_steps.TRAIN_COMPILER_OPTIONS``) or with XLA's default
(``--xla-default``), PyTorch's the eager ``conv2d`` / ``convolution_backward`` (NCHW, oneDNN), alternating
round by round in one process. It prints a row per layer (jaxmri ms / PyTorch ms) and the totals, so the
gap between the two steps can be placed: on which layers and in which part. Each part runs alone (its
own output buffer, no fusion with its neighbours), so the totals show where time goes, not a step's time.

  python benchmarks/unet_convs.py                    # width 32, 5 rounds
  python benchmarks/unet_convs.py --widths 32 64 --xla-default --tune-malloc
"""

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from train_step import cpu_model, torch
from unet_bench import cpu_threads, time_interleaved, unet_timing_flags

from jaxmri.allocator import tune_malloc
from jaxmri.models import UNet
from jaxmri.models.layers import conv3x3_same
from jaxmri.training.compiled import cpu_compiler_options
from jaxmri.training.segment_steps import TRAIN_COMPILER_OPTIONS

PARTS = ("forward", "weight grad", "input grad")


def conv_layers(width: int, size: int, depth: int = 4) -> list[tuple[int, int, int]]:
    """(map side, input channels, output channels) of every 3x3 convolution of ``UNet(1, 1, width=width)``,
    in the order the forward runs them; checked against the model's own kernels."""
    filters = [width * 2**level for level in range(depth + 1)]
    layers, c_in = [], 1
    for level in range(depth + 1):  # encoders, then the bottleneck
        layers += [(size >> level, c_in, filters[level]), (size >> level, filters[level], filters[level])]
        c_in = filters[level]
    for level in range(depth - 1, -1, -1):  # decoders: [upsampled, skip] in, then refine
        layers += [(size >> level, 2 * filters[level], filters[level]), (size >> level, filters[level], filters[level])]
    model = nnx.eval_shape(lambda: UNet(1, 1, width=width, depth=depth, rngs=nnx.Rngs(0)))
    kernels = [v.shape for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
               if path[-1] == "kernel" and v.shape[:2] == (3, 3)]
    # nnx.state is sorted by path, not in call order: compare the (in, out) pairs as multisets
    assert sorted((s[2], s[3]) for s in kernels) == sorted((i, o) for _, i, o in layers), kernels
    return layers


def jax_parts(x, kernel, dy, options) -> dict:
    forward = lambda x, k, dy: conv3x3_same(x, k)
    weight = lambda x, k, dy: jax.vjp(lambda k: conv3x3_same(x, k), k)[1](dy)[0]
    inputs = lambda x, k, dy: jax.vjp(lambda x: conv3x3_same(x, k), x)[1](dy)[0]
    compiled = {part: jax.jit(fn).lower(x, kernel, dy).compile(options)
                for part, fn in zip(PARTS, (forward, weight, inputs))}
    return {part: (lambda c=c: jax.block_until_ready(c(x, kernel, dy))) for part, c in compiled.items()}


def torch_parts(x, kernel, dy) -> dict:
    """PyTorch's three parts on NCHW copies (none of the tensors requires grad, so nothing is recorded)."""
    tx, tdy = (torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))) for a in (x, dy))
    tk = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    backward = lambda mask: torch.ops.aten.convolution_backward(
        tdy, tx, tk, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
    return {"forward": lambda: torch.nn.functional.conv2d(tx, tk, padding=1),
            "weight grad": lambda: backward([False, True, False])[1],
            "input grad": lambda: backward([True, False, False])[0]}


def one_width(width: int, args, options: dict) -> None:
    print(f"\nU-Net width {width}, batch {args.batch}, {args.size} x {args.size}; median of {args.rounds} "
          "alternating rounds, jaxmri ms / PyTorch ms (the first layer's input gradient is pruned in the step)")
    print(f"{'layer (side, in, out)':<24}" + "".join(f"{part:>20}" for part in PARTS))
    rng = np.random.default_rng(0)
    totals = {part: [0.0, 0.0] for part in PARTS}
    for layer, (side, c_in, c_out) in enumerate(conv_layers(width, args.size)):
        x = rng.random((args.batch, side, side, c_in), dtype=np.float32)
        kernel = (rng.standard_normal((3, 3, c_in, c_out)) / np.sqrt(9 * c_in)).astype(np.float32)
        dy = rng.standard_normal((args.batch, side, side, c_out)).astype(np.float32)
        jaxs = jax_parts(*(jnp.asarray(a) for a in (x, kernel, dy)), options)
        torchs = torch_parts(x, kernel, dy)
        parts = PARTS[:2] if layer == 0 else PARTS
        steps = {(fw, part): fns[part] for part in parts for fw, fns in (("jax", jaxs), ("torch", torchs))}
        times = time_interleaved(steps, args.warmup, args.rounds)
        row = f"{f'{side}, {c_in}, {c_out}':<24}"
        for part in PARTS:
            if part not in parts:
                row += f"{'-':>20}"
                continue
            ms = [statistics.median(times[(fw, part)]["wall"]) for fw in ("jax", "torch")]
            totals[part][0] += ms[0]
            totals[part][1] += ms[1]
            row += f"{ms[0]:>11.1f} / {ms[1]:>6.1f}"
        print(row, flush=True)
    print(f"{'total':<24}" + "".join(f"{j:>11.0f} / {t:>6.0f}" for j, t in totals.values()))
    jax_total, torch_total = (sum(v[i] for v in totals.values()) for i in (0, 1))
    print(f"all parts: jaxmri {jax_total:.0f} ms, PyTorch {torch_total:.0f} ms; ratio torch / jaxmri "
          f"{torch_total / jax_total:.2f}x (> 1: jaxmri faster). Layers timed alone: the sum is not a step's time.")


def main(argv=None) -> None:
    parser = unet_timing_flags(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.set_defaults(widths=[32], rounds=5)
    parser.add_argument("--xla-default", action="store_true", help="compile jaxmri's parts with XLA's defaults")
    parser.add_argument("--tune-malloc", action="store_true", help="the jaxmri commands' allocator settings")
    args = parser.parse_args(argv)
    if torch is None:
        parser.error("needs PyTorch: pip install -e '.[bench]'")
    torch.set_num_threads(cpu_threads())
    options = {} if args.xla_default else cpu_compiler_options(TRAIN_COMPILER_OPTIONS)
    malloc = tune_malloc() if args.tune_malloc else "glibc defaults"
    print(f"CPU: {cpu_model()}; jax {jax.__version__} options {options or 'XLA default'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; malloc: {malloc}")
    for width in args.widths:
        one_width(width, args, options)


if __name__ == "__main__":
    main()
