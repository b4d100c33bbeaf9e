# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 9: Scaling out: compiling, caching, and training over several devices (paper Section 2.2, Table 3)
#
# The paper trains each model once, for 50 epochs, on one machine (Section 2.2, Table 3). Its runs are
# small; ours should still be fast, and should grow to more devices without a second copy of the
# training code. This lesson looks under the `train_step` that lessons 2-4 called:
#
# 1. what `jax.jit` turns a function into: `lower` (StableHLO), `compile` (an XLA executable), its
#    optimised HLO text and its FLOP count (`cost_analysis`), and a convolution computed with fewer FLOPs
#    (Winograd);
# 2. the compile cache: which calls reuse an executable and which compile again (new shape, new dtype,
#    new static argument, a new function object), counted with a Python side effect;
# 3. what a recompile costs, measured, on a teaching function and on the library's train step;
# 4. data parallelism with `jax.sharding`: a `Mesh` over 4 CPU devices, the model replicated, each batch
#    split by rows (`jaxmri.training.parallel`), one epoch on 1 device against 4, and why they agree
#    closely but not bit for bit;
# 5. several hosts, in principle: `jaxmri.training.hosts` and a launch command.
#
# It assumes lesson 0 (tracing, `jit`, async dispatch) and lesson 2 (`train_step`, `fit`).

# %% [markdown]
# ## Setup
#
# JAX fixes its devices when it starts, so the four CPU devices are asked for *before* `jax` is imported
# (and before `lesson_setup`, which imports `jaxmri`, which imports `jax`): the XLA flag
# `--xla_force_host_platform_device_count=4` splits this one CPU into four logical devices. They share the
# same cores, so this is a way to run and test multi-device code on a laptop, not a speed-up. Quick mode
# trains SmallCNN on 32x32 images; the full run on 64x64.

# %%
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import inspect  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxmri.config import ClassifyConfig  # noqa: E402
from jaxmri.data.batching import epoch_batches  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.training.classify import Evaluator, build_model, fit, make_keys, train_epoch  # noqa: E402
from jaxmri.training import compiled as compiled_steps  # noqa: E402
from jaxmri.training.classify_steps import train_step  # noqa: E402
from jaxmri.training.compile_clock import COMPILE_EVENTS  # noqa: E402
from jaxmri.training.hosts import LaunchError, launch_settings  # noqa: E402
from jaxmri.training.optim import make_optimizer  # noqa: E402
from jaxmri.training.parallel import batch_mesh, data_parallel, own_rows, replicate, shard_batch  # noqa: E402

from lesson_setup import QUICK, lesson_data, save  # noqa: E402

IMAGE_SIZE = 32 if QUICK else 64
BATCH = 8  # a multiple of 4: every device gets 2 rows
COMPILE_COLOUR, RUN_COLOUR = "#ff7f0e", "#7f7f7f"  # not the class colours: these bars are not classes
CFG = ClassifyConfig(arch="cnn", image_size=IMAGE_SIZE, batch_size=BATCH, epochs=2, seed=0)

DATA, SOURCE, WORK = lesson_data("lesson09")
data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
split = grouped_stratified_split(data.labels, data.groups, test_fraction=CFG.test_fraction,
                                 val_fraction=CFG.val_fraction, seed=CFG.seed)
arrays = {"image": data.images, "label": data.labels}
print(f"{len(data)} images, train {len(split['train'])}; devices: {jax.devices()}")

# %% [markdown]
# ## 1. What `jit` builds
#
# `jax.jit(f)` does nothing until it is called. A call **traces** `f` with abstract values (only shape and
# dtype), which gives a jaxpr; `lower` turns that into StableHLO, the portable text XLA reads; `compile`
# runs XLA's optimisation passes for this backend and returns an executable. The teaching function
# below is a linear layer, a `tanh` and a sum. Both texts, a few lines each:

# %%
def scores(w, x):
    """A (B, D) batch times a (D, H) weight, tanh, summed to one number."""
    return jnp.sum(jnp.tanh(x @ w))


B, D, H = 16, 64, 32
w, x = jnp.ones((D, H)), jnp.ones((B, D))
lowered = jax.jit(scores).lower(w, x)
print("StableHLO (what was traced):")
print("\n".join(lowered.as_text().splitlines()[1:6]))
compiled = lowered.compile()
hlo = compiled.as_text()
print("optimised HLO, the ENTRY computation (metadata cut off):")
for line in hlo[hlo.index("ENTRY"):].splitlines()[:6]:
    print("  " + line.split(", metadata=")[0][:150])
cost = compiled.cost_analysis()
print(f"XLA counts {cost['flops']:,.0f} FLOPs and {cost['transcendentals']:,.0f} transcendentals; by hand: "
      f"2*B*D*H = {2 * B * D * H:,} for the matmul + B*H-1 = {B * H - 1} additions for the sum, and B*H = {B * H} tanh")

# %% [markdown]
# The StableHLO is a line-for-line image of the Python: a `dot_general`, a `tanh`, a `reduce`. The
# optimised HLO is what runs: XLA **fused** the operations (on this CPU the matmul goes to a YNNPACK
# library fusion and the `tanh` and the sum are fused into one loop), so the (16, 32) intermediate
# after `tanh` is never written to memory. `cost_analysis()` counts what the program does: its FLOP count is
# the hand count exactly, and with a measured time it gives the FLOP rate a step reaches
# (`benchmarks/roofline.py` does this for every train step, as a share of the machine's matmul peak).
#
# The count is of what the program does, not of what it computes. Two programs can compute the same
# convolution with different amounts of arithmetic: VGG19's frozen backbone runs its wide layers as
# **Winograd F(2x2, 3x3)** (`jaxmri.models.winograd`): every 2x2 block of outputs comes from a 4x4 input
# tile with 16 multiplications per channel pair instead of 36, through transforms that only add (and
# halve, for the kernel). On CPU those 16 products become 16 matrix products, so the layer does 4/9 of
# the multiply-adds. Compare XLA's count and the outputs on one layer-sized input:

# %%
from jaxmri.models.layers import conv3x3_same  # noqa: E402
from jaxmri.models.winograd import conv3x3_winograd  # noqa: E402

SIDE = 14 if QUICK else 28
maps = jax.random.normal(jax.random.key(0), (2, SIDE, SIDE, 128))
kernel = jax.random.normal(jax.random.key(1), (3, 3, 128, 128)) / np.sqrt(9 * 128)
outputs = {}
for name, conv in (("direct", conv3x3_same), ("Winograd", conv3x3_winograd)):
    program = jax.jit(lambda x, k, conv=conv: conv(x, k)).lower(maps, kernel).compile()
    outputs[name] = program(maps, kernel)
    print(f"{name:>8}: {program.cost_analysis()['flops'] / 1e6:6.0f} MFLOP")
gap = jnp.max(jnp.abs(outputs["direct"] - outputs["Winograd"])) / jnp.max(jnp.abs(outputs["direct"]))
print(f"largest difference: {float(gap):.1e} of the largest output (float32 rounding)")

# %% [markdown]
# About half the FLOPs, the same numbers to float32 rounding. That is why the roofline reports two rates
# for VGG19: the FLOPs XLA ran, and the *effective* rate (the direct convolution's FLOPs over the time
# taken), which can exceed the matmul peak. A GPU's convolution library chooses such algorithms itself,
# so `jaxmri.models.winograd.conv3x3` uses Winograd only in programs compiled for CPU.
#
# ## 2. The compile cache
#
# A jitted function keeps one executable per **signature**: the pytree structure of its arguments, each
# array's shape and dtype (and weak type: a Python `3.0` is a "weak" float32 scalar), and the values of
# its static arguments. A call with a signature seen before reuses the executable; anything else traces
# and compiles again. Tracing runs the Python body, so a Python side effect (appending to a list) counts
# the traces; JAX's own compile events (`jax.monitoring`, what `jaxmri/training/compile_clock.py` listens to)
# count XLA compilations. The inputs are placed on the device first: `jnp.ones(...)` inside a call would
# itself compile a tiny program and blur the count.

# %%
TRACES = []


def normalise(x, scale=1.0):
    """Zero mean, unit spread, times ``scale`` (a static argument: a compile-time constant)."""
    TRACES.append(f"{x.dtype}{list(x.shape)}, scale={scale}")  # Python: runs only while tracing
    return scale * (x - x.mean()) / (x.std() + 1e-6)


normalise_jit = jax.jit(normalise, static_argnames="scale")
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: compiles.append(seconds) if event == COMPILE_EVENTS[-1] else None)

inputs = {name: jax.device_put(value) for name, value in {
    "a": np.arange(8, dtype=np.float32), "b": np.ones(8, np.float32), "c": np.arange(16, dtype=np.float32),
    "d": np.arange(8, dtype=np.int32)}.items()}
calls = [("float32[8]", lambda: normalise_jit(inputs["a"])),
         ("float32[8], other values", lambda: normalise_jit(inputs["b"])),
         ("float32[16]", lambda: normalise_jit(inputs["c"])),
         ("int32[8]", lambda: normalise_jit(inputs["d"])),
         ("float32[8], scale=2.0", lambda: normalise_jit(inputs["a"], scale=2.0)),
         ("float32[8], scale=2.0 again", lambda: normalise_jit(inputs["b"], scale=2.0)),
         ("float32[16] again", lambda: normalise_jit(inputs["c"])),
         ("jax.jit(normalise) again", lambda: jax.jit(normalise, static_argnames="scale")(inputs["a"])),
         ("a new lambda around it", lambda: jax.jit(lambda v: normalise(v))(inputs["a"]))]
print(f"{'call':30s} {'traced':>6s} {'XLA compiles':>12s}")
for name, call in calls:
    traces_before, compiles_before = len(TRACES), len(compiles)
    jax.block_until_ready(call())
    print(f"{name:30s} {len(TRACES) - traces_before:6d} {len(compiles) - compiles_before:12d}")
print(f"{len(TRACES)} traces for {len(calls)} calls: {TRACES}")

# %% [markdown]
# New values never compile; a new shape, a new dtype or a new static value always does, once, and is then
# cached too (the 16-element call later reused its executable). `jax.jit(normalise)` written again shares
# the cache, because the cache belongs to the Python function; a `lambda` created anew is a new function
# every time, so jitting one inside a loop compiles on every pass, a classic slow-down.
#
# The library is built around this cache: every batch has the same shape (the last one is padded with
# weight-0 rows, lesson 2), and `max_angle` and `label_smoothing` are static, so an epoch compiles
# `train_step` once. `train_step` keeps its executables itself (`jaxmri/training/compiled.py`, because it
# compiles with one CPU option), and its cache key is the same kind of signature:

# %%
print(inspect.getsource(compiled_steps._signature))

# %% [markdown]
# ## 3. What a compile costs
#
# The first call of a jitted function pays for tracing, lowering and XLA's compilation before it runs;
# the second only runs. Because JAX dispatches asynchronously, a fair timing waits for the result
# (`jax.block_until_ready`). Square matrices of growing size, with a new function object per size so that
# every first call compiles:

# %%
def first_and_second_call(n: int) -> tuple[float, float]:
    """Seconds of the first (compiling) and the second call of a fresh jitted teaching function."""
    w, x = jax.device_put(np.full((n, n), 0.01, np.float32)), jax.device_put(np.ones((n, n), np.float32))
    fresh = jax.jit(lambda w, x: jnp.sum(jnp.tanh(x @ w)))
    times = []
    for _ in range(2):
        start = time.perf_counter()
        jax.block_until_ready(fresh(w, x))
        times.append(time.perf_counter() - start)
    return times[0], times[1]


sizes = [32, 128, 512] if QUICK else [32, 128, 512, 1024]
first_and_second_call(8)  # the first compile of its kind in a process also pays one-off set-up: not timed
timings = {n: first_and_second_call(n) for n in sizes}
for n, (first, second) in timings.items():
    print(f"n = {n:4d}: first call {1000 * first:7.2f} ms, second {1000 * second:7.3f} ms ({first / second:,.0f}x)")

# %% [markdown]
# For small inputs the compile is almost all of the first call. The same holds for the real step: `fit`
# records each epoch's wall time and, from the compile events, how much of it was compilation (the CLI
# prints it as "1.2s, 0.9s of it compiling"). Two epochs of SmallCNN on one device:

# %%
def new_run(cfg: ClassifyConfig):
    """A fresh model and optimizer from ``cfg``'s seed, plus the evaluators ``fit`` needs."""
    key_init, key_data = make_keys(cfg.seed)
    model, _ = build_model(cfg, len(data.class_names), key_init)
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    evaluators = {part: Evaluator(model, data.images[split[part]], data.labels[split[part]], cfg.batch_size)
                  for part in ("val", "test")}
    return model, optimizer, evaluators, key_data


model, optimizer, evaluators, key_data = new_run(CFG)
cached_before = train_step.cache_size()
history, _ = fit(CFG, model, optimizer, arrays, split["train"], evaluators, key_data, progress=False)
print(f"train_step executables: {cached_before} before this run, {train_step.cache_size()} after")
for record in history:
    print(f"epoch {record['epoch']}: {record['seconds']:.2f} s, {record['compile_seconds']:.2f} s of it compiling")

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
positions = np.arange(len(sizes))
left.bar(positions - 0.2, [1000 * timings[n][0] for n in sizes], 0.4, color=COMPILE_COLOUR,
         label="first call (compiles)")
left.bar(positions + 0.2, [1000 * timings[n][1] for n in sizes], 0.4, color=RUN_COLOUR, label="second call")
left.set(xticks=positions, xticklabels=[f"{n}x{n}" for n in sizes], yscale="log", ylabel="milliseconds",
         title="teaching function: tanh(x @ w).sum()")
left.legend()
epochs = [record["epoch"] for record in history]
compiling = [record["compile_seconds"] for record in history]
left_over = [record["seconds"] - record["compile_seconds"] for record in history]
right.bar(epochs, compiling, color=COMPILE_COLOUR, label="compiling")
right.bar(epochs, left_over, bottom=compiling, color=RUN_COLOUR, label="training + evaluation")
right.set(xticks=epochs, xlabel="epoch", ylabel="seconds", title=f"SmallCNN {IMAGE_SIZE}px, fit on 1 device")
right.legend()
fig.tight_layout()
save(fig, "09_compile_cost.png")

# %% [markdown]
# The first epoch compiles the train step, the evaluation step and a few small helpers; the second
# compiles nothing: every batch matched the cached signature.
#
# ## 4. One train step over four devices
#
# Data parallelism keeps a full copy of the model on every device and gives each device a slice of the
# batch. `jaxmri.training.parallel` does it with `jax.sharding`:
#
# - `batch_mesh(n)`: a 1-D `Mesh` over the first `n` devices, its axis named `"batch"`;
# - `replicate(mesh, model, optimizer)`: every Variable placed with `NamedSharding(mesh, PartitionSpec())`,
#   a whole copy on each device;
# - `shard_batch(mesh, arrays, rows, weight)`: the batch split along its first axis,
#   `NamedSharding(mesh, PartitionSpec("batch"))`;
# - `data_parallel(devices, batch_size, model, optimizer)`: the three together, what a run calls first.
#
# The step is unchanged. `jit` sees inputs that carry shardings and compiles one SPMD program for the mesh:
# each device runs the forward and backward pass on its rows, and XLA inserts an **all-reduce** that sums
# the gradients over the devices before the (replicated) Adam update. `--batch-size` keeps its meaning:
# the global batch. A sharded batch, where its rows live, and a model before and after `replicate`:

# %%
mesh = batch_mesh(4)
print(mesh)
rows, weight = next(epoch_batches(split["train"], BATCH, jax.random.key(1)))
batch = shard_batch(mesh, arrays, rows, weight)
print(f"batch['image'] {batch['image'].shape}: {batch['image'].sharding}")
for shard in batch["image"].addressable_shards:
    print(f"  {shard.device}: rows {shard.index[0].start}:{shard.index[0].stop}, shape {shard.data.shape}")
print(f"own_rows: this process owns rows {own_rows(batch['label'].sharding, BATCH)} of the batch")
try:
    jax.debug.visualize_array_sharding(batch["label"])  # draws with `rich`, when it is installed
except ImportError as err:
    print(f"(no drawing: {err})")
placed, _ = build_model(CFG, len(data.class_names), make_keys(CFG.seed)[0])
print(f"a new model's fc2.kernel: {placed.fc2.kernel[...].sharding}")
replicate(mesh, placed)
copies = placed.fc2.kernel[...].addressable_shards
print(f"after replicate(mesh, model): {placed.fc2.kernel[...].sharding}, {len(copies)} whole copies of shape "
      f"{copies[0].data.shape}")

# %% [markdown]
# Now two fresh SmallCNNs from the same seed: one trains an epoch on one device, the other is replicated
# onto the 4-device mesh by `data_parallel` and trains the same epoch (same shuffle, same augmentation
# keys) through the same `train_epoch`, with `mesh=mesh`.

# %%
def one_epoch(devices: int):
    """A fresh SmallCNN trained for one epoch over ``devices`` devices; returns (model, optimizer, record, s)."""
    key_init, key_data = make_keys(CFG.seed)
    model, _ = build_model(CFG, len(data.class_names), key_init)
    optimizer = make_optimizer(model, lr=CFG.lr, weight_decay=CFG.weight_decay)
    mesh = data_parallel(devices, CFG.batch_size, model, optimizer)
    start = time.perf_counter()
    record = train_epoch(model, optimizer, arrays, split["train"], jax.random.fold_in(key_data, 0),
                         batch_size=CFG.batch_size, max_angle=CFG.max_angle, mesh=mesh)
    return model, optimizer, record, time.perf_counter() - start


model_1, _, record_1, seconds_1 = one_epoch(1)
model_4, optimizer_4, record_4, seconds_4 = one_epoch(4)
print(f"1 device : loss {record_1['train_loss']:.8f}, {seconds_1:.2f} s (with compiling)")
print(f"4 devices: loss {record_4['train_loss']:.8f}, {seconds_4:.2f} s (with compiling)")
print(f"train_step executables: {train_step.cache_size()} (one more per new optimizer, see below)")
print(f"fc1.kernel now lives on: {model_4.fc1.kernel[...].sharding}")
jax.debug.visualize_array_sharding(model_4.fc2.kernel[...])

flat_1 = {".".join(map(str, path)): np.asarray(variable[...])
          for path, variable in nnx.to_flat_state(nnx.state(model_1, nnx.Param))}
flat_4 = {".".join(map(str, path)): np.asarray(variable[...])  # gathered from the devices into NumPy
          for path, variable in nnx.to_flat_state(nnx.state(model_4, nnx.Param))}
differences = {name: float(np.max(np.abs(flat_1[name] - flat_4[name]))) for name in flat_1}
identical = sum(np.array_equal(flat_1[name], flat_4[name]) for name in flat_1)
for name, difference in differences.items():
    print(f"  {name:12s} max |1 device - 4 devices| = {difference:.2e}")
print(f"{identical} of {len(flat_1)} parameter arrays bit-identical; largest difference {max(differences.values()):.2e}")

# %% [markdown]
# `train_step` gained an executable for each `one_epoch`, the 1-device one included, although its shapes
# match the `fit` run of section 3: the optimizer's `optax` transformation is a static part of the step's
# signature (a Python object holding functions), so a **new optimizer object**, even an identical one,
# compiles the step again. Each cross-validation fold (`jaxmri.evaluate`) builds its own optimizer and
# pays one compile per fold. The 4-device step would need its own executable anyway: the inputs' shardings
# are part of what XLA compiles for.
#
# The two models agree closely (the largest difference is printed above: 1e-7 to 1e-6 in quick mode,
# more for the bigger full-mode model), yet most arrays are not bit-identical. Nothing is wrong:
# floating-point addition is not associative. On one device a gradient is one sum over the 8 rows of
# the batch; on four devices each device sums its 2 rows and the all-reduce adds the 4 partial sums, in
# another order, and the last bits differ. Adam then carries those bits into every later step (and,
# dividing by the running RMS of each gradient, can enlarge them). The compiled 4-device program shows
# the all-reduces XLA added (it packs many arrays into one tuple all-reduce); then the same kind of sums
# in another order, in NumPy:

# %%
step_4 = train_step.compiled_for(model_4, optimizer_4, batch, jax.random.key(2), max_angle=CFG.max_angle,
                                 label_smoothing=CFG.label_smoothing)
reduces = [line for line in step_4.as_text().splitlines() if " all-reduce(" in line]
print(f"the 4-device train step ({step_4.cost_analysis()['flops'] / 1e6:,.0f} MFLOPs per step, XLA's count) "
      f"holds {len(reduces)} all-reduce operations, summing over the devices:")
for line in reduces:
    print("  " + re.sub(r"\{[0-9,]*\}|/\*index=\d+\*/", "", line.split(" = ", 1)[1].split(" all-reduce(")[0]))
per_row = np.random.default_rng(0).normal(size=(BATCH, 1000)).astype(np.float32)  # 8 rows of "gradients"
one_sum = np.cumsum(per_row, axis=0, dtype=np.float32)[-1]  # row after row, as one device might
four_sums = np.sum([np.cumsum(part, axis=0, dtype=np.float32)[-1] for part in np.split(per_row, 4)], axis=0,
                   dtype=np.float32)
print(f"summing 8 rows in one pass vs 4 partial sums: {np.mean(one_sum != four_sums):.0%} of 1,000 float32 "
      f"sums differ, by at most {np.max(np.abs(one_sum - four_sums)):.1e}")

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1, 2]})
owner = np.zeros(BATCH, int)
for number, shard in enumerate(batch["label"].addressable_shards):
    owner[shard.index[0]] = number
left.imshow(owner[:, None], cmap="tab10", vmin=0, vmax=9, aspect=0.25)
for row in range(BATCH):
    left.text(0, row, f"row {row}: {jax.devices()[owner[row]]}", ha="center", va="center", fontsize=8,
              color="white")
left.set(xticks=[], yticks=[], title=f"a batch of {BATCH} over 4 devices")
left.grid(False)
names = list(differences)
right.barh(names, [max(v, 1e-12) for v in differences.values()], color=RUN_COLOUR)
right.set(xscale="log", xlabel="max |1 device - 4 devices| after one epoch", title="SmallCNN parameters")
fig.tight_layout()
save(fig, "09_data_parallel.png")

# %% [markdown]
# The README quotes the same kind of agreement from the test suite: on 2 forced CPU devices, 2 epochs
# give the same parameters as 1 device to 5.4e-6 (SmallCNN) and 3.7e-7 (U-Net) absolute
# (`tests/test_parallel.py`). The command line does all of this on its own: with several visible devices
# `python -m jaxmri.train classify` trains data-parallel over all of them (`--devices N` for the first N;
# the batch size must be a multiple of N). Here four "devices" share two cores, so the 4-device epoch is not
# faster (it also compiled a bigger program); on four GPUs each would do a quarter of the work.
#
# ## 5. Several hosts, in principle
#
# Across machines the same code runs once per process (SPMD: every process runs the same Python, the same
# steps in the same order). `jaxmri/training/hosts.py` reads three variables and calls
# `jax.distributed.initialize` before anything else touches JAX; `jax.devices()` then lists every host's
# devices and `batch_mesh` spans them all. What differs per process: each gathers only **its own
# devices' rows** of every batch (`own_rows` above returned all 8 rows, because this one process owns all
# four devices; with 2 processes of 2 devices each, process 1 would get rows 4:8), and only process 0
# writes the run directory; the others write their copies into `$JAXMRI_WORKER_DIR/process-<id>/`, and at
# the end all copies of the parameters are compared bit for bit. The variables, checked without
# starting anything:

# %%
launch = {"JAX_COORDINATOR_ADDRESS": "node0:12355", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
print(f"launch_settings: {launch_settings(launch)}  (coordinator, processes, this process)")
print(f"nothing set: {launch_settings({})}  (one process, as always)")
try:
    launch_settings({"JAX_COORDINATOR_ADDRESS": "node0:12355"})
except LaunchError as err:
    print(f"LaunchError: {err}")

# %% [markdown]
# `tests/test_multihost.py` launches two CPU processes on one machine with a coordinator on localhost, the
# way a cluster launches them. By hand, in two terminals (not run here: two JAX processes start slowly):
#
#     export JAX_COORDINATOR_ADDRESS=localhost:12355 JAX_NUM_PROCESSES=2
#     JAX_PROCESS_ID=0 python -m jaxmri.train classify --image-size 32 --epochs 2 --out /tmp/two   # terminal 1
#     JAX_PROCESS_ID=1 python -m jaxmri.train classify --image-size 32 --epochs 2 --out /tmp/two   # terminal 2
#
# Each prints "process i of 2", "data parallel over 2 devices" and, at the end, "parameters bit-identical
# on all 2 processes (checked)". The README ("Several hosts") reports that the two processes match one
# process to 5.4e-6 (SmallCNN) after 2 epochs, the same all-reduce-order effect as in section 4. On a
# cluster `node0:12355` is process 0's host, `--out` a folder every host sees, and SLURM's `srun` sets
# `JAX_PROCESS_ID` from `$SLURM_PROCID` (README).

# %% [markdown]
# ## Exercises
#
# The solutions set the same `XLA_FLAGS` first (exercises 2 and 3 need the 4 CPU devices).
#
# 1. Predict, for each of the ten calls in `checks.lesson_09.QUIZ` (print it: a jitted
#    `f(x, power=2)` with `power` static, called with various arguments), whether it traces and compiles.
#    Then `from checks.lesson_09 import QUIZ, check_compile_count` and call `check_compile_count(answer)`
#    with your list of ten True/False (or just the total). You should see that only about half of the calls
#    compile; the checker runs the calls, counting traces, and names the first call you got wrong.
# 2. `batch_mesh(3)` uses the first 3 of the 4 devices. For a batch of 12 rows sharded over it with
#    `shard_batch`, which rows does each device hold? Answer as `{device id: (start, stop)}` and call
#    `check_rows_per_device(answer, devices=3, batch=12)`. You should see 4 consecutive rows per device.
#    Why does `--devices 3 --batch-size 8` stop before training (`jaxmri.training.parallel.check_batch_size`)?
# 3. Train one epoch on 2 devices (`one_epoch(2)` above) and compare its parameters with `one_epoch(1)`:
#    `check_parallel_match(nnx.state(model_1, nnx.Param), nnx.state(model_2, nnx.Param), devices=2)`. You
#    should see differences of roughly 1e-7 to 1e-5, far below what another seed gives, and not all
#    arrays bit-identical.
#    Then run `one_epoch(1)` twice: are those two bit-identical, and why is that a different question?
