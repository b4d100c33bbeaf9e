"""CPU speed of one U-Net train step: jaxmri (Flax NNX, jitted) against a PyTorch-eager reference.

One step = forward, sigmoid binary cross-entropy over every pixel, backward, Adam(1e-3) update: the
paper's Section 3.2 training recipe. Both sides run the same network (``jaxmri.models.unet.UNet``; the PyTorch
copy below is a benchmark-only reference, starts from the same weights, and a test checks it computes
the same function), on the same fixed batch of 256 x 256 x 1 images and binary masks, with the same
number of CPU threads (the cores this process may use). The two steps alternate round by round, so a
busy machine slows both alike; the load average is printed with the results.

Usage:
  python benchmarks/unet_bench.py             # widths 32 and 64, batch 4, 256 x 256, 7 timed rounds
  python benchmarks/unet_bench.py --quick     # width 32 only, 3 timed rounds
  taskset -c 0 python benchmarks/unet_bench.py --quick  # one core for both sides

``make_jax_unet_step`` and ``make_torch_unet_step`` return zero-argument callables that run one step and
block until it is done, so a combined benchmark can import and time them. No XLA flags are set: the
library's step chooses its own CPU convolution library per jit (``jaxmri.training.segment_steps``), so this times
exactly what ``python -m jaxmri.train segment`` runs. torch is an optional ``bench`` dependency.
"""

import argparse
import os
import resource
import statistics
import time

import numpy as np


def cpu_threads() -> int:
    """Cores this process may use; XLA's CPU client sizes its thread pool the same way."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def fixed_batch(batch: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random NHWC batch: images in [0, 1] and {0, 1} masks, both float32 (N, size, size, 1)."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 1), dtype=np.float32)
    masks = (rng.random((batch, size, size, 1)) < 0.2).astype(np.float32)
    return images, masks


def make_jax_unet_step(width: int, batch: int, size: int):
    """A zero-arg callable running one jitted jaxmri ``UNet`` train step and blocking until it is done."""
    import jax
    import optax
    from flax import nnx

    from jaxmri.models.unet import UNet

    model = UNet(1, 1, width=width, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    # The library's own segmentation step (jaxmri.training.segment_steps.train_step, pixel BCE, no augmentation).
    from jaxmri.training.segment_steps import train_step

    images, masks = (jax.device_put(a) for a in fixed_batch(batch, size))
    batch_dict = {"image": images, "mask": masks, "weight": jax.numpy.ones(images.shape[0])}

    def step():
        return train_step(model, optimizer, batch_dict)["loss_sum"].block_until_ready()

    return step


def _torch_unet(in_channels: int, out_channels: int, width: int, depth: int):
    """The same U-Net in PyTorch (NCHW): DoubleConv encoders, 2x2 'same' up-convs, [up, skip] concat."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def double_conv(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))

    class TorchUNet(nn.Module):
        def __init__(self):
            super().__init__()
            f = [width * 2**k for k in range(depth + 1)]
            self.encoders = nn.ModuleList(
                [double_conv(in_channels if k == 0 else f[k - 1], f[k]) for k in range(depth)])
            self.bottleneck = double_conv(f[depth - 1], f[depth])
            self.up_convs = nn.ModuleList([nn.Conv2d(f[k + 1], f[k], 2) for k in reversed(range(depth))])
            self.decoders = nn.ModuleList([double_conv(2 * f[k], f[k]) for k in reversed(range(depth))])
            self.head = nn.Conv2d(width, out_channels, 1)

        def forward(self, x):
            skips = []
            for encoder in self.encoders:
                skips.append(encoder(x))
                x = F.max_pool2d(skips[-1], 2)
            x = self.bottleneck(x)
            for up_conv, decoder, skip in zip(self.up_convs, self.decoders, reversed(skips)):
                # Keras 'same' for a 2x2 kernel: one zero row/column after, none before.
                up = up_conv(F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (0, 1, 0, 1)))
                x = decoder(torch.cat([up, skip], dim=1))
            return self.head(x)

    return TorchUNet()


def torch_unet_from_jax(model):
    """A PyTorch copy of a ``jaxmri.models.unet.UNet`` with the same weights (HWIO kernels become OIHW)."""
    import torch

    net = _torch_unet(model.in_channels, model.out_channels, model.width, model.depth)
    pairs = [(block.conv1, tblock[0]) for block, tblock in zip(model.encoders, net.encoders)]
    pairs += [(block.conv2, tblock[2]) for block, tblock in zip(model.encoders, net.encoders)]
    pairs += [(model.bottleneck.conv1, net.bottleneck[0]), (model.bottleneck.conv2, net.bottleneck[2])]
    pairs += list(zip(model.up_convs, net.up_convs))
    pairs += [(block.conv1, tblock[0]) for block, tblock in zip(model.decoders, net.decoders)]
    pairs += [(block.conv2, tblock[2]) for block, tblock in zip(model.decoders, net.decoders)]
    pairs.append((model.head, net.head))
    assert len(pairs) == sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    with torch.no_grad():
        for conv, tconv in pairs:
            kernel = np.array(conv.kernel[...]).transpose(3, 2, 0, 1).copy()
            assert tconv.weight.shape == kernel.shape, (tconv.weight.shape, kernel.shape)
            tconv.weight.copy_(torch.from_numpy(kernel))
            tconv.bias.copy_(torch.from_numpy(np.array(conv.bias[...])))
    return net


def make_torch_unet_step(width: int, batch: int, size: int):
    """A zero-arg callable running one eager PyTorch train step of the same U-Net (CPU, float32)."""
    import torch
    from flax import nnx

    from jaxmri.models.unet import UNet

    torch.set_num_threads(cpu_threads())
    model = torch_unet_from_jax(UNet(1, 1, width=width, rngs=nnx.Rngs(0)))  # same start as the JAX step
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    images, masks = (torch.from_numpy(a).permute(0, 3, 1, 2).contiguous() for a in fixed_batch(batch, size))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), masks)
        loss.backward()
        optimizer.step()
        return loss.item()  # .item() waits for the step, like block_until_ready

    return step


def _param_count(width: int) -> int:
    from flax import nnx

    from jaxmri.models import UNet, count_params

    return count_params(nnx.eval_shape(lambda: UNet(1, 1, width=width, rngs=nnx.Rngs(0))))


def cpu_seconds() -> float:
    """User + system CPU time of this whole process (every thread), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_once(step) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    cpu, start = cpu_seconds(), time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1e3, (cpu_seconds() - cpu) * 1e3


def time_interleaved(steps: dict, warmup: int, rounds: int) -> dict[str, dict]:
    """Time zero-arg callables in turn; the one timing helper of both benchmark scripts.

    Per step name: ``{"first": wall ms of the first call (compiles), "wall": [ms, ...], "cpu": [ms, ...]}``
    for ``rounds`` timed calls after ``warmup`` warm-up calls (the first one included), alternating
    between the steps so that a change in machine load hits all of them alike.
    """
    result = {name: {"first": time_once(step)[0], "wall": [], "cpu": []} for name, step in steps.items()}
    for _ in range(warmup - 1):
        for step in steps.values():
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            wall, cpu = time_once(step)
            result[name]["wall"].append(wall)
            result[name]["cpu"].append(cpu)
    return result


def unet_timing_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every U-Net timing script shares: widths, batch, size, warm-up and timed rounds."""
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    return parser


def main(argv=None) -> None:
    parser = unet_timing_flags(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--quick", action="store_true", help="width 32 only, 1 warm-up and 3 timed rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.widths, args.warmup, args.rounds = [32], 1, 3

    import jax
    import torch

    torch.set_num_threads(cpu_threads())
    print(f"U-Net train step (fwd + BCE + bwd + Adam), batch {args.batch}, {args.size}x{args.size}x1 float32, "
          f"{cpu_threads()} CPU threads each (torch.get_num_threads() = {torch.get_num_threads()})")
    print(f"jax {jax.__version__} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; torch {torch.__version__} eager")
    print(f"{args.warmup} warm-up + {args.rounds} timed rounds, jax and torch alternating; "
          f"load average at start: {os.getloadavg()[0]:.1f}")
    print()
    print(f"{'width':>5} | {'params':>10} | {'jax ms/step':>11} | {'torch ms/step':>13} | {'throughput jax/torch':>20}")
    print(f"{'':>5} | {'':>10} | {'median (min)':>11} | {'median (min)':>13} | {'(torch ms / jax ms)':>20}")
    for width in args.widths:
        steps = {"jax": make_jax_unet_step(width, args.batch, args.size),
                 "torch": make_torch_unet_step(width, args.batch, args.size)}
        times = {name: t["wall"] for name, t in time_interleaved(steps, args.warmup, args.rounds).items()}
        jax_ms, torch_ms = statistics.median(times["jax"]), statistics.median(times["torch"])
        params = _param_count(width)
        print(f"{width:>5} | {params:>10,} | {jax_ms:>6.0f} ({min(times['jax']):.0f}) | "
              f"{torch_ms:>8.0f} ({min(times['torch']):.0f}) | {torch_ms / jax_ms:>20.2f}")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f} (other processes on these cores slow both sides, "
          f"PyTorch's OpenMP threads usually more)")


if __name__ == "__main__":
    main()
