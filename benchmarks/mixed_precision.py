"""Mixed precision on this CPU: what bfloat16 buys each kind of operation the train steps run.

The speed issue allows mixed precision "where the CPU supports it". This script says what the CPU has
(its bfloat16 flags) and times, alternating in one process, each operation in float32 and in bfloat16
with float32 accumulation (``preferred_element_type``), compiled with the options the steps use:

  matmul     a 2048 x 2048 x 2048 product, with the train steps' option (dots on XLA's Eigen kernels)
             and with YNNPACK taking dots (``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``);
  conv       a 3x3 convolution's forward, weight gradient and input gradient at the U-Net's largest
             map (4 x 256 x 256 x 32 -> 32) and a deep one (4 x 32 x 32 x 256 -> 256), with the U-Net
             train step's option;
  winograd   U-Net-sized deep layers as Winograd F(2x2, 3x3) (``jaxmri.models.winograd``): the whole
             float32 layer (forward; forward and both gradients) against its 16 matmuls alone, in
             float32 and in bfloat16 on YNNPACK. The matmuls are all that bfloat16 could speed up there,
             so their time bounds the gain.

  python benchmarks/mixed_precision.py --tune-malloc          # about two minutes
"""

import argparse
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from unet_bench import time_interleaved

from jaxmri.allocator import tune_malloc
from jaxmri.models.winograd import conv3x3_winograd
from jaxmri.training.compiled import YNN_WITHOUT_CONVOLUTIONS, cpu_compiler_options

YNN_DOTS = {"xla_cpu_experimental_ynn_fusion_type": YNN_WITHOUT_CONVOLUTIONS["xla_cpu_experimental_ynn_fusion_type"]
            + ",LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
PRECISIONS = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def bf16_flags() -> str:
    """The CPU's bfloat16-related flags from /proc/cpuinfo (empty where there is none)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown (no /proc/cpuinfo)"
    found = sorted(flag for flag in flags.split() if "bf16" in flag)
    return ", ".join(found) or "none"


def _compiled(fn, args, options):
    compiled = jax.jit(fn).lower(*args).compile(cpu_compiler_options(options))
    return lambda: jax.block_until_ready(compiled(*args))


def _random(rng, shape, dtype=jnp.float32, scale=1.0):
    return jnp.asarray(rng.standard_normal(shape).astype(np.float32) * scale).astype(dtype)


def _product(a, b):
    return jnp.dot(a, b, preferred_element_type=jnp.float32)


def _report(title: str, steps: dict, rounds: int, flops: dict | None = None) -> None:
    times = {name: statistics.median(t["wall"]) for name, t in time_interleaved(steps, 2, rounds).items()}
    print(title)
    for name, ms in times.items():
        rate = f"  {flops[name] / ms / 1e6:6.0f} GFLOP/s" if flops and name in flops else ""
        print(f"  {name:44s} {ms:8.1f} ms{rate}")


def matmuls(rounds: int) -> None:
    rng, n = np.random.default_rng(0), 2048
    steps, flops = {}, {}
    for label, options in (("steps' option", YNN_WITHOUT_CONVOLUTIONS), ("YNNPACK dots", YNN_DOTS)):
        for precision, dtype in PRECISIONS.items():
            a, b = _random(rng, (n, n), dtype), _random(rng, (n, n), dtype)
            name = f"{n}^3 matmul, {precision}, {label}"
            steps[name], flops[name] = _compiled(_product, (a, b), options), 2 * n**3
    _report("matmul", steps, rounds, flops)


def _conv(dtype):
    """``layers.conv3x3_same`` with its operands cast to ``dtype`` and a float32 result (which that
    function does not offer: in bfloat16 it would also round its output)."""
    def conv(x, kernel):
        return jax.lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            preferred_element_type=jnp.float32)
    return conv


def convolutions(rounds: int) -> None:
    rng = np.random.default_rng(1)
    for n, s, i, o in ((4, 256, 32, 32), (4, 32, 256, 256)):
        x, kernel, dy = _random(rng, (n, s, s, i)), _random(rng, (3, 3, i, o), scale=(9 * i) ** -0.5), _random(rng, (n, s, s, o))
        steps = {}
        for precision, dtype in PRECISIONS.items():
            conv = _conv(dtype)
            parts = {"forward": lambda x, k, dy, conv=conv: conv(x, k),
                     "weight gradient": lambda x, k, dy, conv=conv: jax.vjp(lambda k: conv(x, k), k)[1](dy)[0],
                     "input gradient": lambda x, k, dy, conv=conv: jax.vjp(lambda x: conv(x, k), x)[1](dy)[0]}
            for part, fn in parts.items():
                steps[f"{part}, {precision}"] = _compiled(fn, (x, kernel, dy), YNN_WITHOUT_CONVOLUTIONS)
        _report(f"conv 3x3, {n} x {s} x {s} x {i} -> {o} (U-Net train step's option)", dict(sorted(steps.items())), rounds)


def winograd(rounds: int) -> None:
    rng = np.random.default_rng(2)
    for n, s, i, o in ((4, 64, 128, 128), (4, 32, 256, 256), (4, 16, 512, 512)):
        x, kernel, dy = _random(rng, (n, s, s, i)), _random(rng, (3, 3, i, o), scale=(9 * i) ** -0.5), _random(rng, (n, s, s, o))
        tiles = n * (s // 2) ** 2
        steps = {
            "layer forward, f32": _compiled(conv3x3_winograd, (x, kernel), YNN_WITHOUT_CONVOLUTIONS),
            "layer forward + both gradients, f32": _compiled(
                lambda x, k, dy: jax.vjp(conv3x3_winograd, x, k)[1](dy), (x, kernel, dy), YNN_WITHOUT_CONVOLUTIONS),
        }
        for precision, dtype in PRECISIONS.items():
            v, u = _random(rng, (16, tiles, i), dtype), _random(rng, (16, i, o), dtype)
            products = lambda v, u: [_product(v[k], u[k]) for k in range(16)]
            steps[f"its 16 forward matmuls alone, {precision}"] = _compiled(products, (v, u), YNN_DOTS)
        _report(f"Winograd layer, {n} x {s} x {s} x {i} -> {o}", steps, rounds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="matmul,conv,winograd")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tune-malloc", action="store_true", help="set glibc's allocator up as the jaxmri commands do")
    args = parser.parse_args(argv)
    if args.tune_malloc:
        print("malloc:", tune_malloc())
    print(f"CPU bfloat16 flags: {bf16_flags()}; jax {jax.__version__}")
    parts = {"matmul": matmuls, "conv": convolutions, "winograd": winograd}
    for part in args.parts.split(","):
        if part not in parts:
            parser.error(f"--parts: unknown part {part!r}; choose from {', '.join(parts)}")
        parts[part](args.rounds)


if __name__ == "__main__":
    main()
