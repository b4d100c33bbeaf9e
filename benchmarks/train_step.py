"""CPU speed of one training step: jaxmri (Flax NNX, one ``nnx.jit``) against PyTorch eager, same run.

Cases (``--cases``, comma-separated):
  cnn     SmallCNN (paper Table 2), batch 32 of 224 x 224 x 3, every parameter trains.
  vgg19   VGG19Classifier at full size (widths 64..512, hidden 4096), batch 8 of 224 x 224 x 3, only the
          replaced head trains, dropout in train mode (paper Section 2.2).
  unet32, unet64   U-Net of base width 32 / 64, batch 4 of 256 x 256 x 1 (paper Section 3.2): the
          library's ``jaxmri.training.segment_steps.train_step`` and its PyTorch copy, from ``unet_bench.py``.

What one step is. jaxmri: the library's ``jaxmri.training.classify_steps.train_step(model, optimizer, batch, key)``
on a batch dict of uint8 NHWC images, int32 labels and float32 weights. ``key=None`` is the
apples-to-apples row; the ``+aug`` row passes a key, so the step also runs ``jaxmri.data.augment`` (flip,
rotation, blur) on device. PyTorch: the same network written with ``torch.nn`` (NCHW, the eager
default), the same uint8 NHWC batch converted to float, normalized, then forward, ``CrossEntropyLoss``,
backward and ``Adam(lr=1e-3, weight_decay=4e-4)`` over the trainable parameters only
(``requires_grad=False`` elsewhere). torchvision's augmentation transforms are NOT part of the PyTorch
step, so the ``+aug`` rows compare jaxmri-with-augmentation against torch-without.

How it is timed. After warm-up (jaxmri's first call, which compiles, and torch's first step are reported
separately), the jaxmri and torch steps alternate one by one and each column is the median of
``--repeats`` steps: on a shared or throttled host, alternating puts both frameworks under the same load.
ratio = torch ms / jaxmri ms, i.e. jaxmri's throughput relative to torch's (> 1 means jaxmri is faster).
The cpu columns are the process's user + system CPU time per step (all threads). On a virtual machine
whose host takes CPU time away, wall time swings by 2x from minute to minute while CPU time stays
within a few percent, so the cpu ratio is the steadier measure of how much work each step costs.
``--tune-malloc`` makes glibc keep freed memory (``jaxmri.allocator.tune_malloc``, what the ``python -m
jaxmri...`` commands do) for both frameworks; page faults
on freshly mapped buffers are a large part of both steps' cost with the default allocator settings.
torch is an optional benchmark extra (``pip install -e .[bench]``); without it only jaxmri is timed.

Usage:
  python benchmarks/train_step.py                     # cnn, vgg19, unet32, unet64
  python benchmarks/train_step.py --cases cnn --repeats 20
  python benchmarks/train_step.py --quick             # cnn only, 1 warm-up, 3 timed steps
  python benchmarks/train_step.py --tune-malloc       # both frameworks with glibc keeping freed memory
"""

import argparse
import gc
import os
import platform
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# From the sibling scripts (run as a script, its folder is on sys.path): the step set up as training runs it,
# the U-Net cases and the core count.
from roofline import as_trained
from unet_bench import cpu_threads, make_jax_unet_step, make_torch_unet_step, time_interleaved

from jaxmri.allocator import DESCRIPTION as MALLOC_SETTINGS
from jaxmri.allocator import tune_malloc
from jaxmri.models import SmallCNN, VGG19Classifier
from jaxmri.models.layers import IMAGENET_MEAN, IMAGENET_STD
from jaxmri.models.vgg19 import VGG19_BLOCKS, VGG19_WIDTHS
from jaxmri.training.classify_steps import train_step
from jaxmri.training.optim import make_optimizer

try:
    import torch
except ImportError:  # torch is the optional `bench` extra, never a runtime dependency
    torch = None

LR, WEIGHT_DECAY = 1e-3, 4e-4  # paper Table 3
CASES = ("cnn", "vgg19", "unet32", "unet64")
DEFAULT_BATCH = {"cnn": 32, "vgg19": 8, "unet32": 4, "unet64": 4}
DEFAULT_REPEATS = {"cnn": 10, "vgg19": 4, "unet32": 6, "unet64": 4}
UNET_SIZE = 256


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def xla_threads() -> str:
    """How many threads XLA's intra-op (Eigen) pool has, read from the thread names on Linux."""
    try:
        names = [Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")]
    except OSError:
        return "unknown"
    return str(sum(name == "tf_XLAEigen" for name in names))


# ---------------------------------------------------------------- jaxmri steps (the library's own step)


def classifier_batch(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8),
        "label": rng.integers(0, 2, batch).astype(np.int32),
        "weight": np.ones(batch, np.float32),
    }


def make_jax_classifier_steps(case: str, batch: dict):
    """(step without augmentation, step with augmentation): zero-arg callables that block."""
    model = SmallCNN(2, rngs=nnx.Rngs(0)) if case == "cnn" else VGG19Classifier(2, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY)
    as_trained(model, optimizer)
    device_batch = {k: jnp.asarray(v) for k, v in batch.items()}
    key = jax.random.key(0)
    plain = lambda: jax.block_until_ready(train_step(model, optimizer, device_batch, None))
    augmented = lambda: jax.block_until_ready(train_step(model, optimizer, device_batch, key))
    return plain, augmented


# ---------------------------------------------------------------- PyTorch-eager references


def torch_small_cnn():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(32 * 56 * 56, 128), nn.ReLU(), nn.Linear(128, 2),
    )


def torch_vgg19():
    """torchvision's ``vgg19`` layout (configuration "E") with a 2-way head; all but the head frozen."""
    nn = torch.nn
    layers, c_in = [], 3
    for n_convs, width in zip(VGG19_BLOCKS, VGG19_WIDTHS):
        for _ in range(n_convs):
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = width
        layers.append(nn.MaxPool2d(2, 2))
    model = nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(),
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 2),
    )
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model[-1].parameters():
        p.requires_grad_(True)
    return model


def make_torch_classifier_step(case: str, batch: dict):
    torch.manual_seed(0)
    model = torch_small_cnn() if case == "cnn" else torch_vgg19()
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=WEIGHT_DECAY)
    images = torch.from_numpy(batch["image"])
    labels = torch.from_numpy(batch["label"]).long()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def step():
        # Same input as jaxmri's step: uint8 NHWC -> float NCHW in [0, 1] -> ImageNet-normalized.
        x = (images.permute(0, 3, 1, 2).float().div(255.0) - mean) / std
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()

    return step


# ---------------------------------------------------------------- timing


def run_case(case: str, batch_size: int, warmup: int, repeats: int) -> list[dict]:
    """One table row per timed jaxmri step: its medians, torch's medians and both first calls."""
    if case.startswith("unet"):
        width = int(case[4:])
        steps = {"jax": make_jax_unet_step(width, batch_size, UNET_SIZE)}
        if torch is not None:
            steps["torch"] = make_torch_unet_step(width, batch_size, UNET_SIZE)  # sets cpu_threads() threads
        plan = [(case, "jax")]
    else:
        batch = classifier_batch(batch_size)
        plain, augmented = make_jax_classifier_steps(case, batch)
        steps = {"jax": plain, "jax+aug": augmented}
        if torch is not None:
            steps["torch"] = make_torch_classifier_step(case, batch)
        plan = [(case, "jax"), (case + "+aug", "jax+aug")]
    times = time_interleaved(steps, warmup, repeats)
    first = {name: t["first"] for name, t in times.items()}
    wall, cpu = ({name: statistics.median(t[kind]) for name, t in times.items()} for kind in ("wall", "cpu"))
    rows = [dict(case=label, batch=batch_size, jax=wall[name], torch=wall.get("torch"), jax_cpu=cpu[name],
                 torch_cpu=cpu.get("torch"), jax_first=first[name], torch_first=first.get("torch"))
            for label, name in plan]
    del steps
    gc.collect()
    return rows


def fmt(value, digits=0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(torch_value, jax_value) -> str:
    return "-" if torch_value is None else f"{torch_value / jax_value:.2f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=None, help=f"comma-separated subset of {','.join(CASES)} (default: all)")
    parser.add_argument("--batch", type=int, default=None, help="batch size for every case (default: per case)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per framework (default: per case)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per framework, the first included")
    parser.add_argument("--quick", action="store_true", help="cnn only (unless --cases), 1 warm-up, 3 timed steps")
    parser.add_argument("--tune-malloc", action="store_true", help=f"{MALLOC_SETTINGS} for both frameworks, as the jaxmri commands do")
    args = parser.parse_args(argv)
    # The same settings the python -m jaxmri... entry points apply (jaxmri.allocator); off unless asked.
    malloc_note = tune_malloc() if args.tune_malloc else "glibc defaults"
    cases = (args.cases or ("cnn" if args.quick else ",".join(CASES))).split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown case(s) {unknown}; choose from {','.join(CASES)}.")
    if args.quick:
        args.warmup, args.repeats = 1, args.repeats or 3
    if torch is not None:
        torch.set_num_threads(cpu_threads())

    jax.numpy.zeros(1).block_until_ready()  # start XLA's thread pool so it can be counted
    print(f"CPU: {cpu_model()}, {cpu_threads()} cores visible; python {platform.python_version()}; malloc: {malloc_note}")
    print(f"jax {jax.__version__} (jaxlib {jax.lib.__version__}), backend {jax.default_backend()}, XLA intra-op "
          f"threads: {xla_threads()} (XLA default, sized to the visible cores), "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '<unset>')!r}")
    if torch is None:
        print("torch: not installed (pip install -e .[bench]); timing jaxmri only.")
    else:
        print(f"torch {torch.__version__}: torch.set_num_threads({cpu_threads()}) -> intra-op {torch.get_num_threads()}, "
              f"inter-op {torch.get_num_interop_threads()}, eager, NCHW, float32")
    print("median of the timed steps after warm-up, jaxmri and torch alternating; ratio = torch ms / jaxmri ms "
          "(> 1: jaxmri faster). +aug: jaxmri step with on-device augmentation, torch step without (no torchvision).")
    header = (f"{'case':<10} {'batch':>5} {'jaxmri ms':>9} {'torch ms':>9} {'ratio':>5} | {'jax cpu':>7} "
              f"{'torch cpu':>9} {'cpu ratio':>9} | {'jax 1st call':>12} {'torch 1st':>9}")
    print(header)
    print("-" * len(header))
    for case in cases:
        batch = args.batch or DEFAULT_BATCH[case]
        repeats = args.repeats or DEFAULT_REPEATS[case]
        for r in run_case(case, batch, args.warmup, repeats):
            print(f"{r['case']:<10} {r['batch']:>5} {r['jax']:>9.0f} {fmt(r['torch']):>9} {ratio(r['torch'], r['jax']):>5} | "
                  f"{r['jax_cpu']:>7.0f} {fmt(r['torch_cpu']):>9} {ratio(r['torch_cpu'], r['jax_cpu']):>9} | "
                  f"{r['jax_first']:>12.0f} {fmt(r['torch_first']):>9}", flush=True)
    print("ms = median wall-clock ms per step; cpu = median user+system CPU ms of the process per step (all threads);")
    print("1st call = first call's wall ms (jaxmri: trace + compile + one step). Timed steps per case: "
          + ", ".join(f"{c} {args.repeats or DEFAULT_REPEATS[c]}" for c in cases) + f" after {args.warmup} warm-up.")


if __name__ == "__main__":
    main()
