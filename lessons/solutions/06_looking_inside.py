# %% [markdown]
# # Lesson 6, worked solutions
#
# Run it like the lesson (`python lessons/solutions/06_looking_inside.py`); each exercise ends with its
# checker's `exercise K: ok` line. It trains the lesson's SmallCNN again (same config, same seed), so
# exercise 3 can compare with Grad-CAM.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from checks.lesson_06 import check_brightness_heat, check_chance_level, check_gradcam  # noqa: E402
from jaxmri.config import ClassifyConfig  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.images import read_image  # noqa: E402
from jaxmri.data.masks import load_masks  # noqa: E402
from jaxmri.data.source import split_or_explain  # noqa: E402
from jaxmri.evaluation.localisation import localisation_scores  # noqa: E402
from jaxmri.inference.load import load_run  # noqa: E402
from jaxmri.inference.outputs import paste_back  # noqa: E402
from jaxmri.models.gradcam import gradcam  # noqa: E402
from jaxmri.training.classify import train_on_split, tumor_class  # noqa: E402
from jaxmri.training.rundir import start_run  # noqa: E402

from lesson_setup import QUICK, REAL, lesson_data  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 128
EPOCHS = 8 if QUICK else 30
DATA, SOURCE, WORK = lesson_data("lesson06-solutions")
MASKS = REAL / "annotations" / "tumor_polygons_coco.json" if SOURCE == "real Kaggle data" else DATA / "masks"
CFG = ClassifyConfig(arch="cnn", data=str(DATA), out=str(Path(WORK.name) / "cnn"), image_size=IMAGE_SIZE,
                     epochs=EPOCHS, batch_size=16, seed=0)
data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
split = split_or_explain(data.labels, data.groups, CFG)
out, _ = start_run(CFG, "classify-cnn")
train_on_split(CFG, data, split, out, progress=False)
trained = load_run(out)
TUMOR_CLASS = tumor_class(trained.class_names)
stems = [Path(p).stem.lower() for p in data.paths]
masks = load_masks(MASKS, {s: tuple(int(v) for v in size) for s, size in zip(stems, data.sizes)})
annotated = [i for i, s in enumerate(stems) if s in masks and data.labels[i] == TUMOR_CLASS]
truths = [masks[stems[i]] > 0 for i in annotated]
boxes = [tuple(int(v) for v in data.boxes[i]) for i in annotated]


# %% [markdown]
# ## Exercise 1: Grad-CAM by hand
#
# The gradient of the summed target logit with respect to the maps gives each image its own gradient
# (images do not interact); its mean over height and width weighs the channels.

# %%
def grad_cam(model, images, target):
    maps = model.last_conv(images)
    grads = jax.grad(lambda m: jnp.sum(model.from_last_conv(m)[:, target]))(maps)
    alpha = jnp.mean(grads, axis=(1, 2), keepdims=True)
    cam = jax.nn.relu(jnp.sum(alpha * maps, axis=-1))
    peak = jnp.max(cam, axis=(1, 2), keepdims=True)
    return jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)


check_gradcam(grad_cam)

# %% [markdown]
# ## Exercise 2: the chance level of the pointing game

# %%
chance = float(np.mean([t[y0:y1, x0:x1].mean() for t, (x0, y0, x1, y1) in zip(truths, boxes)]))
scores = localisation_scores([paste_back(c, data.boxes[i], data.sizes[i]) for c, i in
                              zip(np.asarray(gradcam(trained.model, {"image": data.images[annotated]},
                                                     target=TUMOR_CLASS)[0]), annotated)], truths, boxes)
print(f"chance level {chance:.3f}; centred baseline {scores['centred_baseline']['pointing_game']:.3f}; "
      f"Grad-CAM {scores['gradcam']['pointing_game']:.3f} ({len(truths)} annotated images, {SOURCE})")
check_chance_level(chance, truths, boxes)


# %% [markdown]
# ## Exercise 3: a brightness baseline

# %%
def brightness_heat(rgb, box):
    x0, y0, x1, y1 = (int(v) for v in box)
    heat = np.zeros(rgb.shape[:2], np.float32)
    gray = rgb[y0:y1, x0:x1].astype(np.float32).mean(-1)
    heat[y0:y1, x0:x1] = gray / max(float(gray.max()), 1e-12)
    return heat


check_brightness_heat(brightness_heat)
bright = localisation_scores([brightness_heat(read_image(data.root / data.paths[i]), data.boxes[i]) for i in annotated],
                             truths, boxes)
for name, s in (("brightness", bright["gradcam"]), ("Grad-CAM", scores["gradcam"]),
                ("centred baseline", scores["centred_baseline"])):
    print(f"{name:16s} pointing game {s['pointing_game']:.3f}, mass inside {s['mass_inside']:.3f}")
print("The pointing game only asks for one pixel: a map that follows a shortcut of the data (bright tumors on the "
      "phantoms) can win it without telling us anything about the model, while mass inside shows how spread out a "
      "map is. Judge a map against several baselines, and explanations on real scans, not only on phantoms.")
