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
# # Lesson 10: Reproducibility: keys, bit-identical reruns, crash and resume (paper Section 2.2, Table 4)
#
# The paper reports one run per model (Table 4: 66.22 % and 77.19 % mean test accuracy) and no seed, so
# nobody, the authors included, can run it again and get the same numbers. jaxmri makes a run a pure
# function of its config: the same command gives the same bits on the same machine, and a run killed at
# any moment continues to exactly the result it would have had. In this lesson you
#
# 1. follow every random number of a run back to its seed (`jaxmri.training.classify.make_keys`,
#    `jax.random.split` and `fold_in`), and see why a key is never used twice;
# 2. train twice with the same config and compare parameters bit for bit, then change the seed;
# 3. start `python -m jaxmri.train classify`, kill it with SIGKILL mid-run, resume it with `--resume`, and
#    compare with a run that never stopped;
# 4. read how the state on disk survives a kill at any instant (write, then rename);
# 5. learn what is *not* bit-identical across machines and device counts, and why.

# %% [markdown]
# ## Setup
#
# SmallCNN (Table 2) at 32x32 in quick mode (64x64 in the full run), batches of 8, so that each run here
# takes seconds. The same split is used throughout; only the keys change when the seed does.

# %%
import dataclasses
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxmri.config import ClassifyConfig  # noqa: E402
from jaxmri.data.batching import epoch_batches  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.training import rundir  # noqa: E402
from jaxmri.training.classify import Evaluator, build_model, fit, make_keys  # noqa: E402
from jaxmri.training.optim import make_optimizer  # noqa: E402

from lesson_setup import QUICK, lesson_data, save  # noqa: E402

IMAGE_SIZE = 32 if QUICK else 64
EPOCHS = 3 if QUICK else 6  # in-process runs (section 2)
CLI_EPOCHS = 12 if QUICK else 20  # the command-line run that gets killed (section 3): room to kill it
CFG = ClassifyConfig(arch="cnn", image_size=IMAGE_SIZE, batch_size=8, epochs=EPOCHS, seed=0)

DATA, SOURCE, WORK = lesson_data("lesson10")
RUNS = Path(WORK.name) / "runs"
data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
split = grouped_stratified_split(data.labels, data.groups, test_fraction=CFG.test_fraction,
                                 val_fraction=CFG.val_fraction, seed=CFG.seed)
arrays = {"image": data.images, "label": data.labels}
print({part: len(idx) for part, idx in split.items()})

# %% [markdown]
# ## 1. Every random number comes from the seed
#
# JAX has no hidden global random state: every draw takes a **key**, and the same key always gives the
# same numbers. A run derives all its keys from one seed, in `jaxmri.training.classify`:
#
# - `make_keys(seed)`: `key_init, key_data = jax.random.split(jax.random.key(seed))`;
# - `build_model`: the initial weights from `key_init` (`nnx.Rngs(params=key_init, dropout=fold_in(key_init, 1))`);
# - `fit`: epoch `e` gets `fold_in(key_data, e)`;
# - `train_epoch`: splits that into `key_perm` (the epoch's shuffle, `epoch_batches`) and `key_aug`, and
#   step `s` augments with `fold_in(key_aug, s)`.
#
# `split` makes new keys from a key; `fold_in(key, n)` makes the key numbered `n`, so any epoch's or
# step's key can be computed directly, without replaying the ones before it. That is what lets a resumed
# run (section 3) continue with exactly the keys it would have used: nothing about keys needs saving.

# %%
key_init, key_data = make_keys(CFG.seed)
print("key_init, key_data:", jax.random.key_data(key_init), jax.random.key_data(key_data))
print("split(key(0)) again:", [jax.random.key_data(k) for k in jax.random.split(jax.random.key(CFG.seed))])
epoch_key = jax.random.fold_in(key_data, 3)
key_perm, key_aug = jax.random.split(epoch_key)
print(f"epoch 4 (e = 3): key {jax.random.key_data(epoch_key)}, its step 5 augments with "
      f"{jax.random.key_data(jax.random.fold_in(key_aug, 5))}")

# %% [markdown]
# **Never use a key twice.** Two draws from one key are not independent: they are made from the same
# random bits. If a flip decision and a rotation were drawn from the same key, they would be coupled:

# %%
key = jax.random.fold_in(key_data, 0)
flip = np.asarray(jax.random.bernoulli(key, 0.5, (1000,)))
uniform = np.asarray(jax.random.uniform(key, (1000,)))
normal = np.asarray(jax.random.normal(key, (1000,)))
other = np.asarray(jax.random.uniform(jax.random.split(key)[1], (1000,)))
ranks = [np.argsort(np.argsort(v)) for v in (uniform, normal, other)]
print(f"same key: bernoulli(0.5) == (uniform < 0.5) for {np.mean(flip == (uniform < 0.5)):.0%} of draws; "
      f"rank correlation of uniform and normal {np.corrcoef(ranks[0], ranks[1])[0, 1]:.3f}")
print(f"split keys: rank correlation {np.corrcoef(ranks[0], ranks[2])[0, 1]:+.3f}")

# %% [markdown]
# The same slip across epochs is worse: one shuffle key reused every epoch gives the same batches every
# epoch. The library's orders, one row per epoch (the first 40 positions of the shuffled training rows),
# against a reused key:

# %%
def epoch_order(key) -> np.ndarray:
    """The training rows in the order ``train_epoch`` visits them with epoch key ``key``."""
    key_perm, _ = jax.random.split(key)
    return np.concatenate([rows[weight > 0] for rows, weight in epoch_batches(split["train"], CFG.batch_size,
                                                                               key_perm)])


orders = np.stack([epoch_order(jax.random.fold_in(key_data, e)) for e in range(10)])[:, :40]
reused = np.stack([epoch_order(key_data) for e in range(10)])[:, :40]
print(f"distinct epoch orders: fold_in {len({tuple(o) for o in orders})} of 10, reused key "
      f"{len({tuple(o) for o in reused})} of 10")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, image, title in ((axes[0], orders, "fold_in(key_data, epoch): a new order each epoch"),
                         (axes[1], reused, "one key reused: the same batches every epoch")):
    ax.imshow(image, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set(xlabel="position in the epoch (colour: which image)", ylabel="epoch", title=title)
    ax.grid(False)
fig.tight_layout()
save(fig, "10_keys.png")

# %% [markdown]
# ## 2. The same config twice: the same bits
#
# `fit` is the library's loop (the one `python -m jaxmri.train classify` runs). With the same config,
# the same data and the same machine, two runs execute the same compiled programs on the same inputs in
# the same order, and XLA's CPU kernels are deterministic, so the parameters agree **bit for bit**, not
# just to a tolerance. A comparison by bits (`tobytes`) also catches `-0.0` against `0.0`, which `==`
# calls equal.

# %%
def train(seed: int):
    """SmallCNN trained with ``fit`` for ``CFG.epochs`` epochs from ``seed``: (model, per-epoch records)."""
    cfg = dataclasses.replace(CFG, seed=seed)
    key_init, key_data = make_keys(cfg.seed)
    model, _ = build_model(cfg, len(data.class_names), key_init)
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    evaluators = {part: Evaluator(model, data.images[split[part]], data.labels[split[part]], cfg.batch_size)
                  for part in ("val", "test")}
    history, _ = fit(cfg, model, optimizer, arrays, split["train"], evaluators, key_data, progress=False)
    return model, history


def differing_arrays(model_a, model_b) -> list[str]:
    """Names of the parameter arrays whose bits differ between two models."""
    flat = [{".".join(map(str, path)): np.asarray(variable[...])
             for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))} for model in (model_a, model_b)]
    return [name for name in flat[0] if flat[0][name].tobytes() != flat[1][name].tobytes()]


def timeless(history) -> list[dict]:
    """The records less their wall-clock fields, the only ones a rerun may change."""
    return [{k: v for k, v in record.items() if k not in ("seconds", "compile_seconds")} for record in history]


run_a, history_a = train(0)
run_b, history_b = train(0)
run_c, history_c = train(1)
count = len(nnx.to_flat_state(nnx.state(run_a, nnx.Param)))
print(f"seed 0 twice: {len(differing_arrays(run_a, run_b))} of {count} arrays differ; "
      f"metrics equal: {timeless(history_a) == timeless(history_b)}")
print(f"seed 0 vs 1: {len(differing_arrays(run_a, run_c))} of {count} arrays differ; final train loss "
      f"{history_a[-1]['train_loss']:.6f} vs {history_c[-1]['train_loss']:.6f}")

# %% [markdown]
# Another seed changes everything: other initial weights (`key_init`), other shuffles and augmentations
# (`key_data`). Bit-identical reruns make a run checkable; they do not make one run's score precise.
# The README gives a feel for the spread: three runs of the same SmallCNN command on different days and
# code versions scored 64.7 %, 67.6 % and 63.2 % test accuracy on 68 test images (one image is 1.5
# points), so the paper's single 66.22 % cannot be told apart from any of them.
#
# ## 3. Kill a run, resume it
#
# Every epoch of `python -m jaxmri.train` ends with `rundir.save_state`: `RUN/state/` holds what trains,
# the other variables (batch-norm statistics, dropout RNG counters), the optimizer state, and
# `progress.json` (every finished epoch's record and the best so far). We start a run as a separate
# process, wait until `progress.json` shows a finished epoch, and kill it with SIGKILL: the process gets
# no chance to clean up, like a power cut or the kernel's out-of-memory killer.

# %%
ARGS = ["classify", "--arch", "cnn", "--data", str(DATA), "--image-size", str(IMAGE_SIZE), "--batch-size", "8",
        "--epochs", str(CLI_EPOCHS)]
killed = RUNS / "killed"
start = time.perf_counter()
proc = subprocess.Popen([sys.executable, "-m", "jaxmri.train", *ARGS, "--out", str(killed)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
progress_file = killed / "state" / "progress.json"
finished = 0
while proc.poll() is None and time.perf_counter() - start < 300:
    try:  # the file can vanish for an instant while a save swaps the new state in
        finished = len(json.loads(progress_file.read_text())["history"])
    except (OSError, ValueError):
        finished = 0
    if finished >= 1:
        proc.send_signal(signal.SIGKILL)
        break
    time.sleep(0.01)
proc.wait()
saved = json.loads(rundir._whole(progress_file.parent.absolute()).joinpath("progress.json").read_text())
print(f"killed after {time.perf_counter() - start:.1f} s (exit status {proc.returncode}), with "
      f"{len(saved['history'])} of {CLI_EPOCHS} epochs saved; metrics.json written: "
      f"{(killed / 'metrics.json').exists()}")
print(f"{killed.name}/ holds {sorted(p.name for p in killed.iterdir())}; progress.json keys {sorted(saved)}")

# %% [markdown]
# `--resume RUN` takes nothing else: the run's own `config.json` says what to train, `load_state` puts the
# saved arrays back into a freshly built model and optimizer, and `fit` continues after the last finished
# epoch with `fold_in(key_data, epoch)` as always. For comparison, the same command once more without
# interruption (and a third run, explained in section 5, at the same time):

# %%
def command(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m jaxmri.train *args`` as a child process, its output kept."""
    return subprocess.Popen([sys.executable, "-m", "jaxmri.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


resumed = command("classify", "--resume", str(killed))
out, _ = resumed.communicate()
print(f"resume: exit status {resumed.returncode}; " + "; ".join(
    line for line in out.splitlines() if "resuming" in line or line.startswith("best epoch")))
four_devices = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                             " --xla_force_host_platform_device_count=4").strip()}
whole = command(*ARGS, "--out", str(RUNS / "whole"))
one_epoch_args = [*ARGS[:-1], "1", "--devices", "1", "--out", str(RUNS / "four-devices-visible")]  # --epochs 1
other_setup = command(*one_epoch_args, env=four_devices)
for done in (whole, other_setup):
    done.communicate()
    print(f"{Path(done.args[-1]).name}: exit status {done.returncode}")

# %% [markdown]
# The two run directories should hold the same results. `metrics.json` may differ only in wall-clock
# fields (`seconds`, `compile_seconds`, `wall_time_s`); the parameters are compared bit for bit in both
# saved places: `checkpoint/` (the best-validation model) and `state/arrays` (the last epoch's whole state,
# optimizer included), read back with orbax exactly as `tests/test_resume.py` does.

# %%
CLOCKS = ("seconds", "compile_seconds", "wall_time_s")


def without_clocks(value):
    """``metrics.json`` less every wall-clock figure."""
    if isinstance(value, dict):
        return {k: without_clocks(v) for k, v in value.items() if k not in CLOCKS}
    if isinstance(value, list):
        return [without_clocks(v) for v in value]
    return value


def saved_arrays(directory: Path) -> dict[str, np.ndarray]:
    """Every array of an orbax checkpoint, by path (RNG keys as their raw bits)."""
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(directory.absolute())
    return {jax.tree_util.keystr(path): np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key) else leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


metrics = {name: json.loads((RUNS / name / "metrics.json").read_text()) for name in ("killed", "whole")}
same_metrics = without_clocks(metrics["killed"]) == without_clocks(metrics["whole"])
print(f"metrics.json equal apart from wall times: {same_metrics}")
for part in ("checkpoint", "state/arrays"):
    a, b = saved_arrays(killed / part), saved_arrays(RUNS / "whole" / part)
    same = sum(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)
    print(f"{part}: {same} of {len(a)} arrays bit-identical (same names: {sorted(a) == sorted(b)})")

losses = {name: [record["train_loss"] for record in run["epochs"]] for name, run in metrics.items()}
fig, ax = plt.subplots(figsize=(7, 3.4))
epochs = np.arange(1, CLI_EPOCHS + 1)
ax.plot(epochs, losses["whole"], color="#7f7f7f", lw=3, alpha=0.5, label="never stopped")
ax.plot(epochs, losses["killed"], "o", color="#ff7f0e", ms=4, label="killed, then --resume")
ax.axvline(len(saved["history"]) + 0.5, color="k", ls="--", lw=1)
ax.text(len(saved["history"]) + 0.6, max(losses["whole"]) * 0.9, f"SIGKILL (during epoch {len(saved['history']) + 1})",
        fontsize=8)
ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title=f"SmallCNN {IMAGE_SIZE}px on {SOURCE}")
ax.legend()
fig.tight_layout()
save(fig, "10_resume.png")

# %% [markdown]
# ## 4. Why a kill at any instant leaves a whole state
#
# A save is not instantaneous: orbax writes several files. Had the process died halfway through writing
# `state/` in place, it would have left a mixture of two epochs. `rundir._write_whole` therefore writes
# the complete new state into `state.new/`, and only then swaps it in with renames; a rename within one
# file system is atomic (POSIX `rename(2)`: any observer sees the old name or the new one, never half).
# A directory cannot be renamed over a non-empty one, so the swap takes two renames:

# %%
print(inspect.getsource(rundir._swap_in))

# %% [markdown]
# Between the two renames only `state.old/` exists, and it is whole. `rundir._whole` looks there when
# `state/` is missing, and `load_state` renames it back before restoring. A kill inside `write(new)`
# leaves a half-written `state.new/`, which the next save deletes first. `tests/test_resume.py` checks
# both ends: it kills a run with SIGKILL (as we did), and it moves a finished run's `state/` to
# `state.old/` (as if killed between the renames) and checks that the resumed run is still bit-identical.
# The second case, on a copy of our killed run:

# %%
between = RUNS / "between-renames"
shutil.copytree(killed / "state", between / "state.old")
print(f"only state.old/ on disk: has_state = {rundir.has_state(between)} (it reads state.old/progress.json)")

# %% [markdown]
# The best checkpoint (`checkpoint/`) is replaced the same way. SIGKILL cannot be caught, so nothing
# may depend on clean-up code; Ctrl-C can be, and `jaxmri.training.stop` holds it until a save is done,
# then ends with one line saying which `--resume` to run (README, "Never lose a run").
#
# ## 5. What is *not* bit-identical
#
# Bit-identical means: same machine, same software, same config. Change any of these and only a
# tolerance remains:
#
# - **the device count**: lesson 9's all-reduce adds partial sums in another order (1 vs 4 devices
#   agreed to 1e-7 to 1e-6 after one quick-mode epoch); the README quotes 5.4e-6 for SmallCNN after 2
#   epochs on 2 devices;
# - **the CPU**: XLA compiles for the processor it runs on (vector width, fused multiply-add), so another
#   model of CPU may round differently;
# - **the software**: another jax/jaxlib or compiler option can pick other kernels. The README's
#   recommended U-Net row went from 0.680 to 0.674 Dice, same command and seed, between two versions of
#   the train step's CPU compiler option ("Results on the real data");
# - **GPUs**: some kernels (scatter-adds, autotuned convolutions) add in an order that can change from
#   run to run, unless XLA is told to be deterministic (`--xla_gpu_deterministic_ops=true`).
#
# Even the CPU set-up matters. The third run above was the same command for its first epoch, on the same
# machine, but in a process where `XLA_FLAGS` split the CPU into 4 devices (training still on one,
# `--devices 1`):

# %%
visible = json.loads((RUNS / "four-devices-visible" / "metrics.json").read_text())["epochs"][0]
plain = metrics["whole"]["epochs"][0]
print(f"epoch 1 training loss: {plain['train_loss']!r} (1 CPU device) vs {visible['train_loss']!r} "
      f"(4 forced CPU devices, trained on 1): bit-identical {plain['train_loss'] == visible['train_loss']}")

# %% [markdown]
# If the two numbers differ, it is only in the last digits: splitting the CPU into more devices changes
# how XLA's thread pool divides the work of one device, and with it the order of some sums. If they agree
# on your machine, the split happened not to change the order there. Either way, that is why a result
# is quoted with the machine and the command that made it, and why the tests compare runs on one machine
# bit for bit but runs on different device counts only to a tolerance.

# %% [markdown]
# ## Exercises
#
# 1. Write `step_key(seed, epoch, step)` returning the augmentation key `train_epoch` uses for step
#    `step` (0-based) of epoch `epoch` (0-based) of a run with `seed`, from `make_keys`, `jax.random.split`
#    and `jax.random.fold_in` only. Check it with `from checks.lesson_10 import check_step_key;
#    check_step_key(step_key)`. You should see it agree with the library on all 8 (seed, epoch, step)
#    triples the checker tries.
# 2. Stop and resume inside Python: run `fit` for 2 epochs with `run_dir=RUN` (an existing folder; `fit`
#    calls `save_state` after each epoch), build a fresh model and optimizer from the same seed,
#    `progress = rundir.load_state(RUN, model, optimizer)`, and continue with
#    `fit(<the config with 4 epochs>, ..., resume=progress)`. Compare with 4 uninterrupted epochs:
#    `check_bit_identical(model_resumed, model_whole, history_a=..., history_b=...)`. You should see every
#    array bit-identical and the metrics equal. Resume once more with `lr=2e-3` in `make_optimizer`: the
#    checker should refuse and name the first array that differs.
# 3. A finished run cannot be stretched: train a 2-epoch run with `jaxmri.train.main([...,"--epochs", "2",
#    "--out", RUN])`, then call `main(["classify", "--resume", RUN, "--epochs", "4"])` with stderr captured
#    (`contextlib.redirect_stderr`). Check the exit status and the line with
#    `check_resume_refused(status, text, saved_epochs=2, given_epochs=4)`. You should see status 2 and one
#    line naming `epochs 2 (given 4)`. Why would resuming with more epochs not be the run you asked for?
#    (Hint: what does `--schedule cosine` compute from `--epochs`?)
