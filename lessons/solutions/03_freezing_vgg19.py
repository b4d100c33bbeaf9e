# %% [markdown]
# # Lesson 3, worked solutions
#
# Run it like the lesson (`python lessons/solutions/03_freezing_vgg19.py`); each exercise ends with its
# checker's `exercise K: ok` line. Same tiny VGG19 and the same first training batch as the lesson.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from checks.lesson_03 import check_embedding_cache, check_finetune_filter, check_trap_step  # noqa: E402
from jaxmri.data.batching import epoch_batches, gather  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.models import VGG19Classifier, count_params  # noqa: E402
from jaxmri.training.classify import Evaluator  # noqa: E402
from jaxmri.training.classify_steps import train_step  # noqa: E402
from jaxmri.training.optim import make_optimizer, make_tx  # noqa: E402

from lesson_setup import lesson_data  # noqa: E402

TINY = dict(widths=(4, 8, 8, 16, 16), hidden=32)
IMAGE_SIZE = 64
LR, WEIGHT_DECAY = 1e-3, 4e-4

DATA, SOURCE, WORK = lesson_data("lesson03-solutions")
data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
split = grouped_stratified_split(data.labels, data.groups, test_fraction=0.27, val_fraction=0.15, seed=0)
rows, weight = next(epoch_batches(split["train"], 8, jax.random.key(0)))
batch = gather({"image": data.images, "label": data.labels}, rows, weight)


def snapshot(model):
    return {".".join(map(str, path)): np.array(variable[...])
            for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def change_per_layer(before, after):
    layers = {}
    for key in before:
        layer = key.rsplit(".", 1)[0]
        layers[layer] = max(layers.get(layer, 0.0), float(np.max(np.abs(after[key] - before[key]))))
    return layers


# %% [markdown]
# ## 1. Fine-tuning the top of the network
#
# Path entries of a list are integers, so `nnx.PathContains(12)` matches `convs.12.kernel`. `nnx.Any`
# joins the layers, `nnx.All(nnx.Param, ...)` keeps it to parameters. The optimizer built with it keeps
# Adam's moments for exactly those layers, and `train_step` differentiates exactly those.

# %%
finetune = nnx.All(nnx.Param, nnx.Any(*(nnx.PathContains(name) for name in ("head", "fc1", "fc2")),
                                      *(nnx.PathContains(k) for k in range(12, 16))))
model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))
optimizer = nnx.Optimizer(model, make_tx(lr=LR, weight_decay=WEIGHT_DECAY), wrt=finetune)
print(f"{count_params(model, finetune):,} of {count_params(model):,} parameters train")
model.eval()  # dropout off and no augmentation (key None): the checker's step then reuses this compilation
before = snapshot(model)
for step in range(3):
    train_step(model, optimizer, batch, None)
moved = sorted(layer for layer, delta in change_per_layer(before, snapshot(model)).items() if delta > 0)
print("layers that moved:", moved)
check_finetune_filter(finetune)

# %% [markdown]
# ## 2. Why the trap moves frozen layers so far
#
# One step of `optax.masked(adam, head)` over all parameters, with dropout off and no augmentation so the
# step is deterministic. For the frozen leaves `optax.masked` passes the raw gradient through and
# `apply_updates` adds it: they move by `+gradient` (uphill, step size 1), while Adam moves the head by at
# most `lr`. A layer whose gradient is above 1e-3 therefore moves further than the head that trains.

# %%
def head_only(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: "head" in jax.tree_util.keystr(path), params)


trap_model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))
trap_model.eval()
trap_optimizer = nnx.Optimizer(trap_model, optax.masked(make_tx(lr=LR, weight_decay=WEIGHT_DECAY), head_only),
                               wrt=nnx.Param)
before = snapshot(trap_model)
train_step(trap_model, trap_optimizer, batch, None)
changes = change_per_layer(before, snapshot(trap_model))
print({layer: f"{delta:.1e}" for layer, delta in changes.items()})
check_trap_step(batch, changes)

# %% [markdown]
# ## 3. Caching `embed` for evaluation
#
# `head(embed(x))` is `model(x)`; the library's `Evaluator` holds such a cache (its `features`). `embed`
# is a fixed function of the image only while nothing in it changes: a frozen backbone (no update
# reaches it) and dropout off (`model.eval()`), so the cached features stay exact however long the head
# trains. Training images cannot use it: each step sees a new augmentation of the image and new dropout
# masks, so the features differ every time.

# %%
model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))  # the paper's freezing: head only
optimizer = make_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY)
val_images = data.images[split["val"]]
embeddings = Evaluator(model, val_images, data.labels[split["val"]], 8).features[0]  # once, in eval mode
model.train()
for step in range(3):
    train_step(model, optimizer, batch, jax.random.key(step))
model.eval()


def logits_from_cache(model, embeddings):
    return model.head(embeddings)


check_embedding_cache(model, val_images, embeddings, logits_from_cache)
