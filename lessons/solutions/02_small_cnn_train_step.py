# %% [markdown]
# # Lesson 2, worked solutions
#
# Run it like the lesson (`python lessons/solutions/02_small_cnn_train_step.py`); each exercise ends with
# its checker's `exercise K: ok` line. Exercise 3 trains SmallCNN twice with the library's `fit`, on the
# lesson's data, split and settings.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

import dataclasses  # noqa: E402
import math  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from checks.lesson_02 import check_decay_steps, check_first_adam_step, check_param_formula  # noqa: E402
from jaxmri.config import ClassifyConfig  # noqa: E402
from jaxmri.data.batching import epoch_batches, gather  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.models import SmallCNN, VGG19Classifier, count_params  # noqa: E402
from jaxmri.training.classify import Evaluator, build_model, fit, make_keys  # noqa: E402
from jaxmri.training.classify_steps import train_step  # noqa: E402
from jaxmri.training.optim import make_optimizer, make_tx  # noqa: E402

from lesson_setup import QUICK, lesson_data  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 128
EPOCHS = 8 if QUICK else 20
LR, WEIGHT_DECAY = 1e-3, 4e-4  # Table 3
CFG = ClassifyConfig(arch="cnn", image_size=IMAGE_SIZE, epochs=EPOCHS, batch_size=16, lr=LR,
                     weight_decay=WEIGHT_DECAY, seed=0)

# %% [markdown]
# ## 1. Parameters as a function of the image side
#
# conv1 `3*3*3*16 + 16 = 448`, conv2 `3*3*16*32 + 32 = 4,640`, fc1 `32*(S/4)^2*128 + 128 = 256 S^2 + 128`,
# fc2 `128*2 + 2 = 258`: in all `256 S^2 + 5,474`, 16.8 million at S = 256. VGG19 does not grow with S
# because `adaptive_avg_pool` brings any feature map to 7x7 before `fc1`, so `fc1`'s width is fixed.

# %%
def params_at(side: int) -> int:
    return 256 * side ** 2 + 5_474


check_param_formula(params_at)
vgg = [count_params(nnx.eval_shape(lambda: VGG19Classifier(2, rngs=nnx.Rngs(0))))]
print(f"VGG19Classifier: {vgg[0]:,} parameters, whatever the image size (its fc1 sees a 7x7x512 map)")

# %% [markdown]
# ## 2. How long Adam-L2 takes to kill a weight without data
#
# The lesson's `trajectory`, for one weight with no data gradient and any weight decay. With Adam-L2 its
# gradient is `wd * w`; Adam divides by the running RMS of that same gradient, so the step is about
# `lr` whatever `wd` is: about 2,200 steps at 4e-4 and at 4e-2 alike (twice `1 / lr`: as `w` shrinks, the
# slow second moment still remembers the larger gradients of the past, so the steps fall below `lr`). AdamW shrinks by
# `(1 - lr * wd)` per step: 115 thousand steps at 4e-2, 11.5 million at 4e-4.

# %%
def no_gradient_path(kind: str, wd: float, steps: int = 3000) -> np.ndarray:
    tx = make_tx(lr=LR, weight_decay=wd, kind=kind)

    def step(carry, _):
        w, state = carry
        updates, state = tx.update(jnp.array(0.0), state, w)
        w = optax.apply_updates(w, updates)
        return (w, state), w

    w = jnp.array(1.0)
    return np.asarray(jax.lax.scan(step, (w, tx.init(w)), None, length=steps)[1])


adam_steps = {wd: int(np.argmax(no_gradient_path("adam", wd) < 0.01)) + 1 for wd in (4e-4, 4e-2)}
adamw_steps = {wd: math.ceil(math.log(0.01) / math.log1p(-LR * wd)) for wd in (4e-4, 4e-2)}
print(f"Adam-L2: {adam_steps}; AdamW: {adamw_steps}")
check_decay_steps(adam_steps, adamw_steps)

# %% [markdown]
# ## 3. lr 0.01 or 0.001?
#
# Adam's first step is `m / sqrt(v) = g / |g|`: every weight with a non-zero gradient moves by exactly
# `lr` (those that move less have a gradient below Adam's `eps` = 1e-8: no data gradient and a weight
# near zero). One step with a fresh model and optimizer shows it on fc1's kernel; at
# lr 0.01 every `fc1` unit's input sum over thousands of pixels swings ten times further. Then both
# learning rates train with the library's `fit`, same seed and batches.

# %%
DATA, SOURCE, WORK = lesson_data("lesson02-solutions")
data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
split = grouped_stratified_split(data.labels, data.groups, test_fraction=CFG.test_fraction,
                                 val_fraction=CFG.val_fraction, seed=CFG.seed)
arrays = {"image": data.images, "label": data.labels}
rows, weight = next(epoch_batches(split["train"], CFG.batch_size, jax.random.key(1)))
batch = gather(arrays, rows, weight)

changes = {}
for lr in (1e-3, 1e-2):
    model = SmallCNN(2, image_size=IMAGE_SIZE, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, lr=lr, weight_decay=WEIGHT_DECAY)
    before = np.array(model.fc1.kernel[...])
    train_step(model, optimizer, batch, jax.random.key(2))
    changes[lr] = (before, np.array(model.fc1.kernel[...]))
check_first_adam_step(changes)

histories = {}
for lr in (1e-3, 1e-2):
    cfg = dataclasses.replace(CFG, lr=lr)
    key_init, key_data = make_keys(cfg.seed)
    model, _ = build_model(cfg, len(data.class_names), key_init)
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    evaluators = {part: Evaluator(model, data.images[split[part]], data.labels[split[part]], cfg.batch_size)
                  for part in ("val", "test")}
    histories[lr], _ = fit(cfg, model, optimizer, arrays, split["train"], evaluators, key_data, progress=False)
for lr, history in histories.items():
    val = np.array([r["val_accuracy"] for r in history])
    test = np.array([r["test_accuracy"] for r in history])
    print(f"lr {lr:g}: val {np.round(val, 2).tolist()}, epoch-to-epoch |change| of test accuracy "
          f"{np.mean(np.abs(np.diff(test))):.3f}, first train loss {history[0]['train_loss']:.2f}")

# %% [markdown]
# Read the printout rather than a rule of thumb. The first epoch's loss is several times larger at lr
# 0.01: every fc1 unit sums thousands of inputs that each moved ten times further. After that the
# larger rate can go either way: on the phantoms it may learn sooner, while on the real set in quick
# mode it can get stuck predicting one class (the validation accuracy then sits at that class's share,
# epoch after epoch). Both fit a test curve that is "highly variable" in places; which rate the authors
# ran cannot be settled from one short run and one seed: compare several seeds in the full run.
