"""Roofline on this CPU: every train step's achieved GFLOP/s as a share of the machine's fp32 matmul peak.

In one process, alternating round by round (so a change in machine load hits every row alike):
  peak       a 4096 x 4096 fp32 ``jnp.dot``, compiled both with XLA's default (YNNPACK) and with its Eigen
             kernel (and with ``--torch`` PyTorch's ``torch.mm`` of the same matrices, i.e. oneDNN): the
             fastest is the best a dense fp32 matmul reaches on this machine now;
  cnn        ``classify_steps.train_step``, SmallCNN, batch 32 of 224 x 224 x 3;
  vgg19      the same step for the frozen VGG19 (only the head trains), batch 8;
  vgg19-fwd  the frozen VGG19 forward alone (``classify_steps.eval_step``, dropout off, Winograd kernels
             cached as ``predict`` runs it), batch 8;
  unet32, unet64   ``segment_steps.train_step``, batch 4 of 256 x 256 x 1.

FLOPs are XLA's own count for the compiled executable (``jitted.lower(...).compile().cost_analysis()``),
so the roofline counts what XLA runs, pruned backward passes included. Achieved GFLOP/s = those FLOPs
/ median wall time; share = achieved / median matmul GFLOP/s of the same rounds. The frozen VGG19 runs
most of its convolutions as Winograd F(2x2, 3x3) on CPU (``jaxmri.models.winograd``), which does 4/9 of
the direct convolution's multiplications; its rows therefore also show the *effective* rate: the FLOPs
XLA counts for the same step with ``winograd=False`` (the direct convolution, what PyTorch runs) over
the Winograd step's time. That rate can exceed the matmul peak; it is the one to compare with PyTorch.

``--torch`` adds PyTorch eager's step for the same train-step rows (the references of ``train_step.py``,
timed in the same alternation) and prints its GFLOP/s for XLA's FLOP count, i.e. the share of the same
peak that PyTorch reaches. That is the ceiling of the speed-up goal: jaxmri at 1.25x PyTorch needs
1.25 x PyTorch's share of the peak, which cannot exceed 100% in fp32. ``--tune-malloc`` applies the
allocator settings of the ``python -m jaxmri...`` commands to the whole process (both frameworks).

``--layers`` adds the profile behind the VGG19 row: each of the 16 conv (+ReLU, + the pool before it)
layers, as XLA's direct convolution, compiled and timed on its own at its real input shape, beside the
whole (Winograd) forward; ``benchmarks/winograd.py`` times every layer both ways.

Usage:
  python benchmarks/roofline.py                      # all rows, 5 rounds
  python benchmarks/roofline.py --cases vgg19-fwd --layers
  python benchmarks/roofline.py --quick              # cnn and vgg19-fwd, 2 rounds
  python benchmarks/roofline.py --torch --tune-malloc # PyTorch's share of the peak beside jaxmri's
"""

import argparse
import atexit
import contextlib
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from unet_bench import cpu_threads, fixed_batch, make_torch_unet_step, time_interleaved

from jaxmri.allocator import DESCRIPTION as MALLOC_SETTINGS
from jaxmri.allocator import tune_malloc
from jaxmri.models import SmallCNN, UNet, VGG19Classifier
from jaxmri.models.layers import max_pool_2x2
from jaxmri.models.vgg19 import VGG19_BLOCKS
from jaxmri.training import classify_steps, segment_steps
from jaxmri.training.classify import winograd_cache
from jaxmri.training.optim import make_optimizer

CASES = ("cnn", "vgg19", "vgg19-fwd", "unet32", "unet64")
BATCH = {"cnn": 32, "vgg19": 8, "vgg19-fwd": 8, "unet32": 4, "unet64": 4}
PEAK_N = 4096
PEAKS = {"peak": "jnp.dot, XLA's default (YNNPACK)", "peak-eigen": "jnp.dot, XLA's Eigen kernel"}
TORCH = "torch:"  # prefix of the PyTorch rows' step names


def flops_of(compiled) -> float:
    """XLA's FLOP count of a compiled executable (``cost_analysis`` is a dict, or a list of one)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis["flops"])


def executable(step, *args):
    """The compiled executable a step runs for ``args`` (``CompiledStep`` keeps its own; ``nnx.jit`` lowers)."""
    return step.compiled_for(*args) if hasattr(step, "compiled_for") else step.lower(*args).compile()


def blocking(fn, *args, **kwargs):
    return lambda: jax.block_until_ready(fn(*args, **kwargs))


def classifier_batch(batch: int) -> dict:
    rng = np.random.default_rng(0)
    return {"image": jnp.asarray(rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)),
            "label": jnp.asarray(rng.integers(0, 2, batch).astype(np.int32)),
            "weight": jnp.ones(batch, jnp.float32)}


def direct_flops(step, model, *args) -> float:
    """XLA's FLOP count of ``step`` with the model's Winograd convolutions switched off (the direct work)."""
    kept, model.winograd = model.winograd, False
    try:
        return flops_of(executable(step, model, *args))
    finally:
        model.winograd = kept


# Contexts kept open for the rest of the process (a bare ``__enter__()`` would be closed with its object),
# closed at exit while the interpreter is still whole.
HELD = contextlib.ExitStack()
atexit.register(HELD.close)


def as_trained(model: nnx.Module, optimizer: nnx.Optimizer) -> None:
    """Set ``model`` up as ``jaxmri.training.classify.train_epoch`` runs its steps: ``model.train()`` inside
    ``winograd_cache`` (a frozen VGG19's Winograd kernels transformed once), held for the rest of the process."""
    model.train()
    HELD.enter_context(winograd_cache(model, optimizer))
    if isinstance(model, VGG19Classifier):
        assert model.winograd_kernels is not None or jax.default_backend() != "cpu"


def make_case(case: str, batch: int):
    """(zero-arg step that blocks, FLOPs of one call as compiled, FLOPs of the direct convolutions) for one row."""
    if case.startswith("peak"):
        # XLA's CPU backend can run the dot on YNNPACK (its default) or on its own Eigen kernel; on some
        # machines one is much faster, so both are timed and the faster is this machine's peak.
        a = jax.random.normal(jax.random.key(0), (PEAK_N, PEAK_N), jnp.float32)
        options = {} if case == "peak" else {"xla_cpu_experimental_ynn_fusion_type": ""}
        dot = jax.jit(jnp.dot).lower(a, a).compile(options)
        return blocking(dot, a, a), flops_of(dot), flops_of(dot)
    if case == "peak-torch":
        torch = torch_module()
        a = torch.randn(PEAK_N, PEAK_N)
        return (lambda: torch.mm(a, a)), 2.0 * PEAK_N**3, 2.0 * PEAK_N**3  # torch on CPU returns when done
    if case.startswith("unet"):
        model = UNet(1, 1, width=int(case[4:]), rngs=nnx.Rngs(0))
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
        images, masks = fixed_batch(batch, 256)
        data = {"image": jnp.asarray(images), "mask": jnp.asarray(masks), "weight": jnp.ones(batch)}
        step = segment_steps.train_step
        counted = flops_of(executable(step, model, optimizer, data))
        return blocking(step, model, optimizer, data), counted, counted
    model = SmallCNN(2, rngs=nnx.Rngs(0)) if case == "cnn" else VGG19Classifier(2, rngs=nnx.Rngs(0))
    data = classifier_batch(batch)
    if case == "vgg19-fwd":
        model.eval()
        HELD.enter_context(winograd_cache(model))  # as predict runs it: nothing trains, every kernel cached
        step = classify_steps.eval_step
        args = (data,)
    else:
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=4e-4)
        as_trained(model, optimizer)  # as classify.train_epoch runs the step
        step = classify_steps.train_step
        args = (optimizer, data, None)
    counted = flops_of(executable(step, model, *args))
    direct = direct_flops(step, model, *args) if case != "cnn" else counted
    return blocking(step, model, *args), counted, direct


def torch_module():
    """PyTorch, threads set as in ``train_step.py``, or None without the optional `bench` extra."""
    from train_step import torch  # imported here: train_step.py imports torch at its top

    if torch is not None:
        torch.set_num_threads(cpu_threads())
    return torch


def make_torch_case(case: str, batch: int):
    """PyTorch eager's train step for a jaxmri train-step row (``train_step.py``'s references), or None."""
    from train_step import classifier_batch as numpy_batch
    from train_step import make_torch_classifier_step

    if torch_module() is None or case not in ("cnn", "vgg19", "unet32", "unet64"):
        return None
    if case.startswith("unet"):
        return make_torch_unet_step(int(case[4:]), batch, 256)
    return make_torch_classifier_step(case, numpy_batch(batch))


def vgg19_layers(batch: int):
    """One jitted function per VGG19 conv layer (the pool before it, the conv, its ReLU) at its real input
    shape, plus the FLOPs of each; returns [(name, step, flops)]."""
    model = VGG19Classifier(2, rngs=nnx.Rngs(0))
    layer = nnx.jit(lambda conv, x, pool: nnx.relu(conv(max_pool_2x2(x) if pool else x)), static_argnums=2)
    rows, size, c_in, i = [], 224, 3, 0
    for block, n_convs in enumerate(VGG19_BLOCKS):
        for k in range(n_convs):
            pool = block > 0 and k == 0
            in_size = size * 2 if pool else size
            x = jax.random.uniform(jax.random.key(i), (batch, in_size, in_size, c_in))
            conv = model.convs[i]
            name = f"conv{block + 1}_{k + 1} {in_size}x{in_size}x{c_in}->{conv.out_features}" + (" (pool first)" if pool else "")
            rows.append((name, blocking(layer, conv, x, pool), flops_of(layer.lower(conv, x, pool).compile())))
            c_in, i = conv.out_features, i + 1
        size //= 2
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--layers", action="store_true", help="also time each VGG19 conv layer on its own")
    parser.add_argument("--quick", action="store_true", help="cnn and vgg19-fwd, 2 rounds")
    parser.add_argument("--torch", action="store_true", help="also time PyTorch eager's train steps (the bench extra)")
    parser.add_argument("--tune-malloc", action="store_true", help=f"{MALLOC_SETTINGS} for the whole process")
    args = parser.parse_args(argv)
    malloc_note = tune_malloc() if args.tune_malloc else "glibc defaults"
    cases = ["cnn", "vgg19-fwd"] if args.quick else args.cases.split(",")
    rounds = 2 if args.quick else args.rounds
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown case(s) {unknown}; choose from {','.join(CASES)}.")

    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {cpu_threads()} cores visible; "
          f"{rounds} timed rounds, all rows alternating; malloc: {malloc_note}")
    steps, flops, work = {}, {}, {}
    peaks = dict(PEAKS)
    if args.torch and torch_module() is not None:
        peaks["peak-torch"] = "PyTorch's torch.mm (oneDNN)"
    for case in [*peaks, *cases]:
        steps[case], flops[case], work[case] = make_case(case, BATCH.get(case, 0))
        reference = make_torch_case(case, BATCH.get(case, 0)) if args.torch else None
        if reference is not None:
            steps[TORCH + case] = reference
    times = time_interleaved(steps, 2, rounds)
    wall = {case: statistics.median(t["wall"]) / 1e3 for case, t in times.items()}
    rates = {p: [flops[p] / (w / 1e3) / 1e9 for w in times[p]["wall"]] for p in peaks}
    for p, label in peaks.items():
        print(f"fp32 {PEAK_N}x{PEAK_N} matmul, {label}: {statistics.median(rates[p]):.0f} GFLOP/s "
              f"(min-max over rounds {min(rates[p]):.0f}-{max(rates[p]):.0f})")
    peak = max(statistics.median(r) for r in rates.values())
    print(f"peak = the fastest: {peak:.0f} GFLOP/s")
    header = (f"{'step':<16} {'batch':>5} {'GFLOP/call':>10} {'ms/call':>8} {'GFLOP/s':>8} {'share of peak':>13} "
              f"| {'direct GFLOP':>12} {'effective':>9} {'share':>6}")
    print(header)
    print("-" * len(header))
    for case in cases:
        for name in (case, TORCH + case):
            if name in wall:  # the PyTorch row counts XLA's FLOPs of the same step (direct convolutions)
                counted = work[case] if name.startswith(TORCH) else flops[case]
                achieved, effective = counted / wall[name] / 1e9, work[case] / wall[name] / 1e9
                print(f"{name:<16} {BATCH[case]:>5} {counted / 1e9:>10.1f} {wall[name] * 1e3:>8.0f} "
                      f"{achieved:>8.0f} {achieved / peak:>12.0%} | {work[case] / 1e9:>12.1f} {effective:>9.0f} "
                      f"{effective / peak:>6.0%}")
        if TORCH + case in wall:
            needed = 1.25 * work[case] / wall[TORCH + case] / 1e9 / peak  # 1.25 x PyTorch's effective share
            print(f"{'':<16} jaxmri / torch {wall[TORCH + case] / wall[case]:.2f}x; 1.25x torch needs an effective "
                  f"{needed:.0%} of the peak")

    if args.layers:
        rows = vgg19_layers(BATCH["vgg19-fwd"])
        layer_steps = {"whole": steps.get("vgg19-fwd") or make_case("vgg19-fwd", BATCH["vgg19-fwd"])[0]}
        layer_steps.update({name: step for name, step, _ in rows})
        layer_times = time_interleaved(layer_steps, 2, rounds)
        total = 0.0
        print(f"\nVGG19 forward, batch {BATCH['vgg19-fwd']}, layer by layer (each its own jit), medians:")
        for name, _, fl in rows:
            ms = statistics.median(layer_times[name]["wall"])
            total += ms
            print(f"  {name:<36} {ms:>7.1f} ms {fl / ms / 1e6:>6.0f} GFLOP/s {fl / ms / 1e6 / peak:>5.0%}")
        whole = statistics.median(layer_times["whole"]["wall"])
        print(f"  sum of the layers {total:.0f} ms (XLA's direct convolution); whole forward {whole:.0f} ms "
              f"(the library's, Winograd from conv2_2 on: benchmarks/winograd.py times each layer both ways)")


if __name__ == "__main__":
    main()
