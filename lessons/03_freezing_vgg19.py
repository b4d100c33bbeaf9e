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
# # Lesson 3: freezing a pretrained VGG19 (paper Section 2.2)
#
# The paper's better classifier is transfer learning: torchvision's VGG19 with ImageNet weights, "we
# froze all pre-trained layers, and changed the head of the model to perform binary classification",
# trained with the same Adam settings as SmallCNN. It reached 77.19 % mean test accuracy (Table 4).
#
# Freezing sounds like one line of code, and in PyTorch it is (`requires_grad = False`). In JAX the
# parameters are just arrays in a tree, and *you* decide what is differentiated and what the optimizer
# touches. This lesson shows
#
# 1. how `jaxmri` states which parameters train (`trainable_filter`) and hands that to
#    `nnx.Optimizer(..., wrt=...)` and to the gradient;
# 2. a check that frozen parameters are **bit-identical** after training steps;
# 3. the trap: `optax.masked` alone looks like freezing but moves the frozen weights;
# 4. how `jaxmri.weights` turns torchvision's ImageNet file into our model, checked name by name.
#
# We use a channel-reduced VGG19 (same 16 convolutions and 3 linear layers, 4 to 16 filters instead of
# 64 to 512) so that everything runs in seconds on a CPU; the code paths are the ones the full model uses.

# %% [markdown]
# ## Setup

# %%
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxmri.data.batching import epoch_batches, gather  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.models import VGG19Classifier, count_params  # noqa: E402
from jaxmri.training.classify_steps import train_step  # noqa: E402
from jaxmri.training.optim import make_optimizer, make_tx  # noqa: E402
from jaxmri.weights import DEFAULT_WEIGHTS, convert, load_vgg19  # noqa: E402
from jaxmri.weights.name_map import TORCHVISION_CONVS, TORCHVISION_LINEARS  # noqa: E402

from lesson_setup import QUICK, ROOT, lesson_data, save  # noqa: E402

TINY = dict(widths=(4, 8, 8, 16, 16), hidden=32)  # VGG19's layout with far fewer filters
IMAGE_SIZE = 64  # VGG19 needs at least 32x32 (five 2x poolings)
STEPS = 3
LR, WEIGHT_DECAY = 1e-3, 4e-4  # Table 3, as the paper uses for VGG19 too

DATA, SOURCE, WORK = lesson_data("lesson03")

data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
split = grouped_stratified_split(data.labels, data.groups, test_fraction=0.27, val_fraction=0.15, seed=0)
rows, weight = next(epoch_batches(split["train"], 8, jax.random.key(0)))
batch = gather({"image": data.images, "label": data.labels}, rows, weight)
print(f"one training batch: image {batch['image'].shape} {batch['image'].dtype}, labels {batch['label']}")

# %% [markdown]
# ## 1. What trains in the paper's model
#
# `VGG19Classifier` keeps torchvision's layout: 16 convolutions (`convs`), then `fc1` and `fc2`
# (4096 wide), then `head`, the replaced last layer. Its `trainable_filter()` says which parameters
# train: `nnx.All(nnx.Param, nnx.PathContains("head"))` when the backbone is frozen. A filter selects
# variables from a module's state, so the same object can count parameters, build the optimizer and
# restrict the gradient (`jaxmri.models.count_params(model, wrt)` counts with one). At full size (built abstractly with `nnx.eval_shape`: no memory, no FLOPs):

# %%
full = nnx.eval_shape(lambda: VGG19Classifier(2, rngs=nnx.Rngs(0)))
print(f"VGG19Classifier (paper size): {count_params(full):,} parameters, {count_params(full, full.trainable_filter()):,} "
      f"trainable: {full.trainable_filter()}")

model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))
selected = [".".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, model.trainable_filter()))]
print(f"tiny VGG19: {count_params(model):,} parameters, trainable: {selected}")

# %% [markdown]
# ## 2. Freezing through the optimizer *and* the gradient
#
# `jaxmri.training.optim.make_optimizer` builds `nnx.Optimizer(model, tx, wrt=model.trainable_filter())`. Two
# things follow:
#
# - the optimizer keeps Adam's moments only for `head` (no memory spent on 139 million frozen weights);
# - `train_step` differentiates only `optimizer.wrt`, via
#   `nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, optimizer.wrt))`. The frozen layers get no
#   gradient at all, and since nothing before `head` needs one, XLA drops the backward pass through the
#   backbone.
#
# The test for freezing is simple and strict: copy every parameter, take a few steps, compare **bit for
# bit** (`np.array_equal`, not `allclose`).

# %%
def snapshot(model: nnx.Module) -> dict[str, np.ndarray]:
    """Copies of every parameter, keyed by path (copies: later steps must not change them)."""
    return {".".join(map(str, path)): np.array(variable[...])
            for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def change_per_layer(before: dict, after: dict) -> dict[str, float]:
    """Largest absolute change of any parameter in each layer (``convs.3``, ``fc1``, ``head``...)."""
    layers: dict[str, float] = {}
    for key in before:
        layer = key.rsplit(".", 1)[0]
        layers[layer] = max(layers.get(layer, 0.0), float(np.max(np.abs(after[key] - before[key]))))
    return layers


def adam_moment_paths(optimizer: nnx.Optimizer) -> list[str]:
    """The parameters for which the optimizer keeps Adam's first moment ``mu``."""
    paths = set()
    for path, _ in jax.tree_util.tree_leaves_with_path(nnx.state(optimizer.opt_state)):
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        if "mu" in keys:
            paths.add(".".join(keys[keys.index("mu") + 1:-1]))  # drop the trailing ".value"
    return sorted(paths)


optimizer = make_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY)
print("Adam moments kept for:", adam_moment_paths(optimizer))

model.train()  # dropout on in fc1/fc2, as in training
before = snapshot(model)
for step in range(STEPS):
    train_step(model, optimizer, batch, jax.random.key(step))
after = snapshot(model)
right_way = change_per_layer(before, after)
frozen_identical = all(np.array_equal(before[k], after[k]) for k in before if not k.startswith("head."))
print(f"after {STEPS} steps: every frozen parameter bit-identical: {frozen_identical}; "
      f"head moved by up to {right_way['head']:.2e}")

# %% [markdown]
# ## 3. The trap: `optax.masked` alone
#
# A natural-looking alternative is to keep the optimizer over *all* parameters and mask the
# transformation: `optax.masked(adam, mask)` with `mask` true for `head`. But `optax.masked` only
# decides where the inner transformation is *applied*; for masked-out leaves it passes the incoming
# update through **unchanged**. The incoming update is the raw gradient, and `optax.apply_updates` adds
# it: every "frozen" weight takes a step of `+gradient`, uphill, with step size 1 instead of `lr`.
# Nothing errors, the loss may even go down for a while (the head still learns), and the pretrained
# features are quietly destroyed. Here is the same model, seed and batch with that optimizer:

# %%
def head_only(params):
    """Mask tree for ``optax.masked``: True for the ``head`` parameters, False elsewhere."""
    return jax.tree_util.tree_map_with_path(lambda path, _: "head" in jax.tree_util.keystr(path), params)


trap_model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))
trap_optimizer = nnx.Optimizer(trap_model, optax.masked(make_tx(lr=LR, weight_decay=WEIGHT_DECAY), head_only),
                               wrt=nnx.Param)
trap_model.train()
before = snapshot(trap_model)
for step in range(STEPS):
    train_step(trap_model, trap_optimizer, batch, jax.random.key(step))
trap = change_per_layer(before, snapshot(trap_model))
moved = [layer for layer, delta in trap.items() if layer != "head" and delta > 0]
print(f"optax.masked: {len(moved)} of {len(trap) - 1} 'frozen' layers changed; largest change "
      f"{max(trap[layer] for layer in moved):.2e} ({max(moved, key=trap.get)}), head {trap['head']:.2e}")

# %% [markdown]
# If you must freeze with optax alone, send the frozen leaves to `optax.set_to_zero()` with
# `optax.multi_transform`: then the updates really are zero. The weights stay put, but the full gradient
# is still computed (and thrown away) every step. The `wrt` filter avoids both problems, which is why
# `jaxmri` uses it. Timing one step each way on this tiny model:

# %%
def labels_of(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if "head" in jax.tree_util.keystr(path) else "frozen", params)


zero_model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))
zero_tx = optax.multi_transform({"train": make_tx(lr=LR, weight_decay=WEIGHT_DECAY), "frozen": optax.set_to_zero()},
                                labels_of)
zero_optimizer = nnx.Optimizer(zero_model, zero_tx, wrt=nnx.Param)
zero_model.train()
before = snapshot(zero_model)
timings = {}
for name, (m, opt) in {"wrt=trainable_filter()": (model, optimizer),
                       "multi_transform + set_to_zero": (zero_model, zero_optimizer)}.items():
    jax.block_until_ready(train_step(m, opt, batch, jax.random.key(9)))  # compile
    start = time.perf_counter()
    for step in range(10):
        jax.block_until_ready(train_step(m, opt, batch, jax.random.key(10 + step)))
    timings[name] = (time.perf_counter() - start) / 10
after = snapshot(zero_model)
print(f"multi_transform: frozen bit-identical: "
      f"{all(np.array_equal(before[k], after[k]) for k in before if not k.startswith('head.'))}")
for name, seconds in timings.items():
    print(f"  {name:30s} {seconds * 1e3:6.1f} ms per step")

# %%
layers = list(right_way)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
for ax, changes, title in ((axes[0], right_way, "nnx.Optimizer(wrt=trainable_filter())"),
                           (axes[1], trap, "optax.masked(adam, head) over all params")):
    values = np.array([changes[layer] for layer in layers])
    colors = ["tab:green" if layer == "head" else "tab:red" for layer in layers]
    ax.bar(range(len(layers)), np.where(values > 0, values, np.nan), color=colors)
    for i, value in enumerate(values):
        if value == 0:
            ax.text(i, 1e-7, "0", ha="center", va="bottom", fontsize=7)
    if all(changes[layer] == 0 for layer in layers if layer != "head"):
        ax.text(len(layers) / 2 - 1, 3e-6, "frozen layers: change exactly 0 (bit-identical)", ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
    ax.set_title(f"{title}\nlargest |change| per layer after {STEPS} steps", fontsize=9)
axes[0].set_ylabel("max |parameter change|")
axes[0].set_ylim(1e-7, None)
fig.tight_layout()
save(fig, "03_freezing.png")

# %% [markdown]
# Dropout is the other half of "frozen": `fc1` and `fc2` are followed by `Dropout(0.5)`, active after
# `model.train()` and off after `model.eval()`. With the backbone frozen and dropout off, everything
# before `head` is a fixed function of the image, so `jaxmri.training.classify` computes `model.embed(images)`
# once for the validation and test images and re-runs only `head` after each epoch.

# %%
x = jnp.asarray(batch["image"][:2]) / 255.0
model.eval()
print(f"eval mode, two calls equal: {bool(jnp.array_equal(model(x), model(x)))}")
model.train()
print(f"train mode, two calls equal: {bool(jnp.array_equal(model(x), model(x)))}")

# %% [markdown]
# ## 4. ImageNet weights: `jaxmri.weights`
#
# The real weights are torchvision's `vgg19-dcbb9e9d.pth` (548 MB). Get them with
#
#     python -m jaxmri.weights download vgg19
#
# which downloads the file, checks its SHA-256 and converts it to `weights/vgg19_imagenet.safetensors`
# (or `python -m jaxmri.weights convert FILE --out ...` for a file you fetched yourself; see
# `weights/README.md`). Nothing in `jaxmri` touches the network at import or when a model is built.
#
# The conversion reads the `.pth` without torch and without running any code from the file (a `.pth` is a
# pickle, and unpickling can execute code), and maps every name explicitly:
#
# - torchvision's `features.{i}` Sequential interleaves convs with ReLUs and pools; conv `k` is
#   `features.{TORCHVISION_CONVS[k]}`, its kernel transposed from PyTorch's (out, in, 3, 3) to Flax's
#   (3, 3, in, out);
# - `classifier.0/3/6` become `fc1`/`fc2`/`head`, transposed from (out, in) to (in, out), and `fc1`'s rows
#   are reordered because PyTorch flattens the 7x7x512 map channel-first and we flatten channel-last;
# - every source key must be used and every shape must match, so a VGG16 or a `vgg19_bn` file fails
#   loudly instead of loading half-way.

# %%
print("conv k <- torchvision key:", {f"convs.{k}": f"features.{i}" for k, i in enumerate(TORCHVISION_CONVS[:5])},
      "...")
print("linears:", TORCHVISION_LINEARS)

# %% [markdown]
# The test suite carries a tiny VGG19 saved by PyTorch in torchvision's layout (random weights, 4 to 16
# filters) together with the logits PyTorch computed for two images. Converting it and comparing logits is
# the whole loading path, checked end to end, without the 548 MB file:

# %%
fixtures = ROOT / "tests" / "fixtures"
if (fixtures / "vgg19_tiny_torchvision.pth").is_file():
    report = convert(fixtures / "vgg19_tiny_torchvision.pth", Path(WORK.name) / "vgg19_tiny.safetensors")
    print({k: report[k] for k in ("format", "source_keys", "keys", "parameters", "widths", "hidden", "num_classes")})
    imagenet_like = load_vgg19(report["out"], num_classes=1000)  # comes back in eval mode
    reference = np.load(fixtures / "vgg19_tiny_reference.npz")
    logits = np.asarray(imagenet_like(jnp.asarray(reference["images"]) / 255.0))
    print(f"largest difference from PyTorch's logits: {np.max(np.abs(logits - reference['torch_logits_224'])):.2e}")
    paper_style = load_vgg19(report["out"], num_classes=2)  # new 2-way head, backbone frozen
    print(f"paper-style model: {count_params(paper_style):,} parameters, "
          f"{count_params(paper_style, paper_style.trainable_filter()):,} trainable (the new head)")
else:
    print(f"{fixtures} not found (the tests folder is not installed); skipping the conversion demo")

weights = ROOT / DEFAULT_WEIGHTS
if weights.is_file() and not QUICK:
    imagenet = load_vgg19(weights, num_classes=2)
    print(f"{weights}: {count_params(imagenet):,} parameters, {count_params(imagenet, imagenet.trainable_filter()):,} trainable")
else:
    print(f"{weights} {'skipped in quick mode' if weights.is_file() else 'not present'}; "
          "`python -m jaxmri.weights download vgg19` makes it, then "
          "`python -m jaxmri.train classify --arch vgg19 --data DIR` trains the paper's model")

# %% [markdown]
# ## Exercises
#
# Each checker rebuilds the lesson's tiny VGG19 and recomputes the answer; import them with
# `from checks.lesson_03 import check_finetune_filter, check_trap_step, check_embedding_cache`.
#
# 1. Fine-tune more than the head: write a filter that trains `head`, `fc1`, `fc2` and the last conv
#    block (`convs.12` to `convs.15`; `nnx.All`, `nnx.Any`, `nnx.PathContains` and the integer path
#    entries help), build `nnx.Optimizer(model, make_tx(...), wrt=your_filter)`, and use `snapshot` /
#    `change_per_layer` to see which layers moved. Check it with `check_finetune_filter(your_filter)`.
#    You should see exactly those 7 layers move and the other 12 convolutions stay bit-identical.
# 2. In the trap, take ONE step from a fresh `VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))` after
#    `model.eval()` and with key `None` (no dropout, no augmentation: a deterministic step), and check
#    `change_per_layer` of it with `check_trap_step(batch, changes)`, which compares each frozen layer's
#    change with its gradient. You should see every frozen layer move by exactly its largest gradient and
#    the head by `lr` = 1e-3, with at least one frozen layer (roughly `fc2`) moving further than the head.
#    Why can a "frozen" layer move *more* than the layer Adam trains?
# 3. `jaxmri.training.classify` caches `model.embed(images)` for evaluation (`Evaluator(...).features`).
#    Cache the validation images' embeddings once, train the head a few steps, then write
#    `logits_from_cache(model, embeddings)` and check it with
#    `check_embedding_cache(model, val_images, embeddings, logits_from_cache)` (`val_images` uint8). You
#    should see the cached logits equal the model's and, with dropout on, embeddings that move by roughly
#    0.1. Why is the cache exact only with the backbone frozen *and* dropout off, and why can it not be
#    used for the training images?
