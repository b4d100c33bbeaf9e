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
# # Lesson 6: Looking inside: Grad-CAM (paper Sections 2.2 and 4, and beyond)
#
# The paper judges its classifiers by one number, the mean test accuracy (Table 4), and its conclusion
# (Section 4) asks for expert-checked masks and better measures. Neither says *why* a scan was called
# "tumor". A 66 % classifier trained on 150 images could just as well have learned the skull's size,
# the scanner's corner letters or the image's brightness. Before a model's answer can be trusted, we
# should ask where it looks, and check that against where the tumor is: the annotated masks give us
# the answer key.
#
# In this lesson you will
#
# 1. compute a plain saliency map, the gradient of the tumor logit with respect to the input pixels,
#    with `jax.grad` on a one-line function;
# 2. compute Grad-CAM (Selvaraju et al., 2017) exactly as `jaxmri.models.gradcam` does, one step at a
#    time, and see why the gradients of the last convolution's maps are averaged into one weight per
#    channel;
# 3. paste the map back onto the scan at its own size (`jaxmri.inference.outputs.paste_back`), as
#    `python -m jaxmri.predict --explain` does;
# 4. score it against the tumor masks (`jaxmri.evaluation.localisation`: pointing game and mass inside)
#    beside a "centred baseline" that only knows where the brain is.
#
# The classifier is the paper's SmallCNN (Table 2), trained by the library's own loop
# (`jaxmri.training.classify.train_on_split`, the body of `python -m jaxmri.train classify`).

# %% [markdown]
# ## Setup
#
# Real data when found, else phantoms (whose generator writes the exact tumor masks into
# `masks/`). The real set's masks are the 50 annotated `yes/` images of
# `annotations/tumor_polygons_coco.json`. Quick mode trains at 64x64 for a few epochs; the full run at
# 128x128 for longer. The run directory lives in the lesson's temporary folder `WORK`.

# %%
import json
import time
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxmri.config import ClassifyConfig  # noqa: E402
from jaxmri.data.augment import to_float  # noqa: E402
from jaxmri.data.crop import crop_resize  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.images import read_image  # noqa: E402
from jaxmri.data.masks import load_masks  # noqa: E402
from jaxmri.data.source import split_or_explain  # noqa: E402
from jaxmri.evaluation.localisation import (centred_baseline, localisation_scores, mass_inside,  # noqa: E402
                                            pointing_hit)
from jaxmri.inference.load import load_run  # noqa: E402
from jaxmri.inference.outputs import paste_back, peak_xy  # noqa: E402
from jaxmri.models.gradcam import cam_from, class_score_gradient, gradcam, maps_gradient  # noqa: E402
from jaxmri.predict import main as predict_main  # noqa: E402
from jaxmri.training.classify import train_on_split, tumor_class  # noqa: E402
from jaxmri.training.rundir import start_run  # noqa: E402

from lesson_setup import FIGURES, QUICK, REAL, TUMOR, lesson_data, save  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 128
EPOCHS = 8 if QUICK else 30
DATA, SOURCE, WORK = lesson_data("lesson06")
WORKDIR = Path(WORK.name)
MASKS = REAL / "annotations" / "tumor_polygons_coco.json" if SOURCE == "real Kaggle data" else DATA / "masks"
CFG = ClassifyConfig(arch="cnn", data=str(DATA), out=str(WORKDIR / "cnn"), image_size=IMAGE_SIZE, epochs=EPOCHS,
                     batch_size=16, seed=0)  # what `python -m jaxmri.train classify --arch cnn ...` builds

# `jaxmri.training.classify.run(CFG)` does these four steps (plus a few checks); we call them one by one to
# keep `data`, whose crop boxes and original sizes we need below.
data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
split = split_or_explain(data.labels, data.groups, CFG)
out, _ = start_run(CFG, "classify-cnn")  # the run directory, with config.json
start = time.perf_counter()
metrics = train_on_split(CFG, data, split, out, progress=False)
print(f"trained in {time.perf_counter() - start:.1f} s; best-validation epoch {metrics['best_epoch']}, "
      f"test accuracy {metrics['test_accuracy']:.3f}")

# %% [markdown]
# `load_run` reads the run directory back: it rebuilds SmallCNN from `config.json` and restores the
# best-validation checkpoint, in eval mode. This is what `python -m jaxmri.predict --run` does, so
# everything below works on any run you trained with the command, too.
#
# Next, the masks, read at each image's **original** size (lesson 4), and the annotated tumor images.

# %%
trained = load_run(out)
model = trained.model
TUMOR_CLASS = tumor_class(trained.class_names)  # the "yes" folder
stems = [Path(p).stem.lower() for p in data.paths]
sizes = {stem: tuple(int(v) for v in size) for stem, size in zip(stems, data.sizes)}
masks = load_masks(MASKS, sizes)
annotated = np.array([i for i, stem in enumerate(stems) if stem in masks and data.labels[i] == TUMOR_CLASS])
in_test = np.isin(annotated, split["test"])
print(f"{len(masks)} masks; {len(annotated)} annotated tumor images, {in_test.sum()} of them in the test part")

# %% [markdown]
# ## 1. A saliency map: the gradient of the tumor logit with respect to the pixels
#
# The simplest question: which pixels, changed a little, would change the tumor score most? That is
# `d logit_tumor / d pixel`, one `jax.grad` of a function from one image to one number. `jax.vmap` runs
# it over a batch (lesson 0). The model is only *called* here; no parameter is differentiated or
# changed. We show the largest absolute gradient over the three colour channels.

# %%
shown = annotated[in_test][:4] if in_test.sum() >= 4 else annotated[:4]
images = to_float(jnp.asarray(data.images[shown]))  # float32 (4, S, S, 3) in [0, 1]
saliency_fn = jax.vmap(jax.grad(lambda image: model(image[None])[0, TUMOR_CLASS]))
saliency = np.abs(np.asarray(saliency_fn(images))).max(-1)  # (4, S, S)
print(f"images {images.shape} -> saliency {saliency.shape}; largest |gradient| per image: "
      + ", ".join(f"{v:.3g}" for v in saliency.max((1, 2))))

# %% [markdown]
# Saliency maps are honest (they are exactly the local derivative) but noisy: every pixel gets its own
# gradient, and neighbouring pixels can disagree in sign, so the map looks like speckle around edges.
# They answer "what would change the score", which is not quite "what made the score".
#
# ## 2. Grad-CAM, one step at a time
#
# Grad-CAM looks one level up, at the **last convolution's feature maps** `A` (N, h, w, K): each of the
# K channels is a detector ("bright round blob", "edge of the skull") and its map says where it fired.
# SmallCNN splits its forward pass there: `model(x) == model.from_last_conv(model.last_conv(x))`, with
# `last_conv` giving `conv2`'s ReLU map at half the input size (S/2 x S/2 x 32).

# %%
maps = model.last_conv(images)
print(f"last conv maps {maps.shape}; from_last_conv(maps) == model(x): "
      f"{bool(jnp.allclose(model.from_last_conv(maps), model(images), atol=1e-5))}")

# %% [markdown]
# Step 1, `maps_gradient(model, maps, target)`: the gradient of the tumor logit with respect to the maps
# (not the pixels). Its inner `score` sums the target logit over the batch; since images never interact
# in the network, image n's gradient is that of its own logit. `class_score_gradient(model, images,
# target)` is `last_conv` followed by this, returning `(maps, grads, logits)`.
#
# Step 2, `cam_from(maps, grads)`:
#
#     alpha_k = mean over (i, j) of  d y_tumor / d A_ijk        one weight per channel, (N, 1, 1, K)
#     cam     = ReLU( sum_k alpha_k * A_k )                     (N, h, w), then divided by its maximum
#
# Why **average** the gradient over the map? The gradient itself is as noisy as the saliency map, and
# its spatial detail is not what we trust: the maps `A` carry the "where". The average asks one question
# per channel: "overall, does more of this detector raise the tumor score?". For a network that ends in
# global average pooling and one linear layer, `alpha_k` is that layer's weight for channel k divided
# by h x w, so the map is Class Activation Mapping's (Zhou et al. 2016) up to a constant: Grad-CAM is
# the first-order version of CAM for any head, here SmallCNN's max-pool + two dense layers. The ReLU
# keeps only evidence **for** the tumor class (negative parts lower the tumor score), and dividing by
# the peak puts every map in [0, 1].
#
# Below, the library's two functions, then the same formula written out in NumPy, then the jitted
# `gradcam` step (which also returns the softmax probabilities), all agreeing.

# %%
maps, grads, logits = class_score_gradient(model, images, TUMOR_CLASS)
cam = cam_from(maps, grads)
alpha = np.asarray(grads).mean(axis=(1, 2))  # (N, K): one weight per channel
by_hand = np.maximum(np.einsum("nk,nhwk->nhw", alpha, np.asarray(maps)), 0)
by_hand = by_hand / np.maximum(by_hand.max((1, 2), keepdims=True), 1e-12)
jitted, probabilities = gradcam(model, {"image": data.images[shown]}, target=TUMOR_CLASS)
print(f"channel weights alpha {alpha.shape}; {np.mean(alpha > 0):.0%} of them positive")
print(f"cam {cam.shape}: by hand matches {bool(np.allclose(cam, by_hand, atol=1e-5))}, "
      f"jitted gradcam matches {bool(np.allclose(cam, jitted, atol=1e-5))}; "
      "tumor probabilities " + ", ".join(f"{p:.3f}" for p in np.asarray(probabilities[:, TUMOR_CLASS])))
again, _ = maps_gradient(model, maps, TUMOR_CLASS)  # step 1 alone gives the same gradient
assert np.allclose(again, grads)

# %% [markdown]
# ## 3. Back onto the scan
#
# Each image was cropped to its brain box `(x0, y0, x1, y1)` in the original scan and resized to S x S
# (lesson 1). `paste_back(square, box, size)` undoes that for any map: it resizes the square to the
# box's own width and height (bilinear: a heat map is a continuous quantity) and places it in an array
# of zeros of the scan's size. The masks live at that size too, so this is where we compare.
#
# The figure: crops with the tumor outline, the saliency map, Grad-CAM on the crop, and Grad-CAM
# pasted back onto the original scan, with the mask's outline and the map's peak marked `+`.

# %%
fig, axes = plt.subplots(3, 4, figsize=(8, 6.2), squeeze=False)
for row, i in enumerate(shown[:3]):
    crop_mask = crop_resize(masks[stems[i]], tuple(data.boxes[i]), IMAGE_SIZE, cv2.INTER_NEAREST)  # lesson 4
    heat = paste_back(np.asarray(cam[row]), data.boxes[i], data.sizes[i])
    panels = [(data.images[i], "crop + tumor", "gray"), (saliency[row], "saliency |d logit / d x|", "viridis"),
              (np.asarray(cam[row]), f"Grad-CAM {cam.shape[1]}x{cam.shape[2]}", "viridis"),
              (read_image(data.root / data.paths[i]), f"on the scan, {heat.shape[1]}x{heat.shape[0]}", "gray")]
    for col, (panel, title, cmap) in enumerate(panels):
        axes[row, col].imshow(panel, cmap=cmap)
        axes[row, col].set_title(title, fontsize=8)
    axes[row, 0].contour(crop_mask, levels=[0.5], colors=TUMOR, linewidths=1)
    axes[row, 3].imshow(heat, cmap="viridis", alpha=0.6)
    axes[row, 3].contour(masks[stems[i]], levels=[0.5], colors=TUMOR, linewidths=1.2)
    axes[row, 3].plot(*peak_xy(heat), "w+", markersize=8)
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
save(fig, "06_gradcam.png", dpi=70)

# %% [markdown]
# ## 4. Does the model look at the tumor?
#
# `jaxmri.evaluation.localisation` scores a set of maps against the masks, at each scan's own size:
#
# - **pointing game** (`pointing_hit`): is the map's peak inside the tumor? Averaged: the share of
#   images where it is;
# - **mass inside** (`mass_inside`): the share of the map's total that lies inside the mask (0 for an
#   all-zero map).
#
# A number alone means little: tumors sit inside the brain, so any map that favours the middle of the
# brain scores something. `centred_baseline(size, box)` is such a map, a Gaussian centred on the brain
# box (sigma a quarter of the box's side, zero outside it), and `localisation_scores` reports both. A
# model that does not beat it has learned "brain", not "tumor".

# %%
cams = np.asarray(gradcam(model, {"image": data.images[annotated]}, target=TUMOR_CLASS)[0])
heats = [paste_back(c, data.boxes[i], data.sizes[i]) for c, i in zip(cams, annotated)]
truths = [masks[stems[i]] > 0 for i in annotated]
boxes = [data.boxes[i] for i in annotated]
first = 0
print(f"{data.paths[annotated[first]]}: peak in the tumor {pointing_hit(heats[first], truths[first])}, "
      f"mass inside {mass_inside(heats[first], truths[first]):.3f}; the centred baseline's peak in the tumor: "
      f"{pointing_hit(centred_baseline(truths[first].shape, boxes[first]), truths[first])}")

results = {"all annotated": localisation_scores(heats, truths, boxes)}
if in_test.any():
    test_rows = np.flatnonzero(in_test)
    results["test part only"] = localisation_scores([heats[j] for j in test_rows], [truths[j] for j in test_rows],
                                                    [boxes[j] for j in test_rows])
for name, scores in results.items():
    g, b = scores["gradcam"], scores["centred_baseline"]
    print(f"{name:14s} ({scores['images']:2d} images, masks cover {scores['mask_area']:.1%} of the scan): "
          f"pointing game {g['pointing_game']:.3f} vs baseline {b['pointing_game']:.3f}; "
          f"mass inside {g['mass_inside']:.3f} vs baseline {b['mass_inside']:.3f}")

# %% [markdown]
# Read the test row first: the training images were seen in every epoch and can be "explained" by
# memory. For comparison, README's results section scores the second 50-epoch SmallCNN run of its
# results table (`python -m jaxmri.train classify --arch cnn --epochs 50`, 224x224) with `python -m jaxmri.predict
# --localisation` on the 50 annotated real images: a pointing game of 30 % against 10 % for the centred
# baseline, and 26.4 % of the mass inside the masks against 10.6 % (the masks cover 4.9 % of the scan);
# on the 18 of them in its test part, 27.8 % against 5.6 %. Better than "the middle of the brain", yet
# most of the map lies elsewhere. This lesson's own short run gives the numbers printed above; on
# phantoms, whose tumors are large bright blobs, expect much higher scores.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1.4, 1]})
names = list(results)
x = np.arange(2)
for k, name in enumerate(names):
    scores = results[name]
    offset = (k - (len(names) - 1) / 2) * 0.4
    for source, colour, shift in (("gradcam", TUMOR, -0.1), ("centred_baseline", "tab:gray", 0.1)):
        values = [scores[source]["pointing_game"], scores[source]["mass_inside"]]
        left.bar(x + offset + shift, values, 0.18, color=colour, alpha=1.0 if k == 0 else 0.5,
                 label=f"{'Grad-CAM' if source == 'gradcam' else 'centred baseline'}, {name}")
left.set(xticks=x, xticklabels=["pointing game", "mass inside"], ylim=(0, 1.3), yticks=np.linspace(0, 1, 6),
         ylabel="score",
         title=f"SmallCNN {IMAGE_SIZE}px, {EPOCHS} epochs, {SOURCE}")
left.legend(fontsize=7, ncol=2, loc="upper center")
j = int(np.argmax([s["gradcam_mass_inside"] for s in results["all annotated"]["per_image"]]))
right.imshow(read_image(data.root / data.paths[annotated[j]]))
right.imshow(centred_baseline(truths[j].shape, boxes[j]), cmap="viridis", alpha=0.6)
right.contour(truths[j], levels=[0.5], colors=TUMOR, linewidths=1.2)
right.set_title(f"centred baseline on {Path(data.paths[annotated[j]]).name}", fontsize=8)
right.set_axis_off()
fig.tight_layout()
save(fig, "06_localisation.png")

# %% [markdown]
# ## 5. The same with the command
#
# `python -m jaxmri.predict --run RUN --out OUT --localisation MASKS FILES...` runs `predict_files`
# with `explain=True` (the same crop, the same `gradcam` step, the same `paste_back`), writes
# `OUT/<name>_gradcam.png` per scan and `OUT/localisation.json`. Here we call its `main` on the test
# part's annotated scans (in-process, exactly the code the command runs) and read the file back.

# %%
chosen = np.flatnonzero(in_test) if in_test.any() else np.arange(len(annotated))  # rows of `heats`
files = [str(data.root / data.paths[annotated[j]]) for j in chosen]
status = predict_main(["--run", str(out), "--out", str(WORKDIR / "explained"), "--localisation", str(MASKS),
                       "--no-progress", *files])
command = json.loads((WORKDIR / "explained" / "localisation.json").read_text())
record = json.loads((WORKDIR / "explained" / "predictions.jsonl").read_text().splitlines()[0])
ours = results["test part only" if in_test.any() else "all annotated"]
print(f"exit status {status}; {len(list((WORKDIR / 'explained').glob('*_gradcam.png')))} heat-map PNGs")
print(f"pointing game: command {command['gradcam']['pointing_game']:.3f}, "
      f"above {ours['gradcam']['pointing_game']:.3f}; "
      f"mass inside: command {command['gradcam']['mass_inside']:.3f}, above {ours['gradcam']['mass_inside']:.3f}")
print(f"{Path(files[0]).name}: the command's peak {record['gradcam_peak']}, ours {list(peak_xy(heats[chosen[0]]))}")

# %% [markdown]
# Grad-CAM is a **first-order, one-layer** explanation: it only sees what `conv2`'s 32 channels encode,
# at half the input's resolution, and only through the gradient at this one image. It can look
# convincing and still be wrong about the model (Adebayo et al., 2018, "Sanity checks for saliency
# maps": some maps barely change when the weights are randomised). That is why we score it against the
# masks and against baselines instead of admiring it.
#
# ## Exercises
#
# 1. Write `grad_cam(model, images, target)` yourself from `model.last_conv`, `model.from_last_conv`
#    and `jax.grad` only (no `maps_gradient` / `cam_from`): float32 images (N, S, S, 3) in [0, 1] in,
#    maps (N, S/2, S/2) in [0, 1] out. Check it with `from checks.lesson_06 import check_gradcam;
#    check_gradcam(grad_cam)`. You should see it agree with the library's `gradcam` to about 1e-5 on a
#    freshly initialised SmallCNN.
# 2. The chance level of the pointing game: a map whose peak falls on a uniformly random pixel of the
#    brain box hits the tumor with probability (tumor pixels inside the box) / (pixels of the box).
#    Compute that, averaged over the annotated images (`truths`, `boxes` above), and check it with
#    `from checks.lesson_06 import check_chance_level; check_chance_level(value, truths, boxes)`. You
#    should see roughly 0.04 to 0.07 on either data set (the tumors fill a few percent of the brain box),
#    below the centred baseline, which profits from tumors rarely touching the skull.
# 3. A brightness baseline: write `brightness_heat(rgb, box)` that returns float32 (H, W): the scan's
#    gray value (mean of R, G, B) inside the brain box divided by its maximum there, 0 outside. Check
#    it with `from checks.lesson_06 import check_brightness_heat; check_brightness_heat(brightness_heat)`,
#    then score it with `localisation_scores` on the annotated scans (read them with
#    `jaxmri.data.images.read_image`). You should see roughly: on the phantoms, whose tumors are drawn as
#    the brightest tissue, brightness wins the pointing game as often as Grad-CAM but with much less
#    mass inside; on the real data it scores about twice the chance level, well below Grad-CAM. What
#    does that say about judging a map by its pointing game alone, and about phantoms as a test of
#    explanations?
