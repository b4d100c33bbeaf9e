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
# # Lesson 4: U-Net segmentation (paper Section 3, Table 5, Figure 5)
#
# The paper's second task outlines the tumor itself. The authors drew masks in Labelbox (Section 3.1),
# resized images and masks, and trained a U-Net (Section 3.2, Table 5) with Adam (lr 0.001) and
# cross-entropy: once on the whole set for 2 epochs, once on a third of it for 10 epochs, judged by eye
# from example outputs (Figure 5). Their Conclusion asks for "pixel accuracy or the Jaccard Index" as
# future work.
#
# This lesson
#
# 1. shows that Table 5 cannot be built as printed, and what `jaxmri.models.unet.UNet` builds instead;
# 2. reads masks from a COCO polygon file and from PNG files with `jaxmri.data.masks`, and crops each mask with
#    **its own image's** brain box, so image and mask stay aligned;
# 3. explains why pixel accuracy is a poor score for small tumors, and the rule for empty masks;
# 4. trains a small U-Net with `jaxmri.training.segment_steps.train_step` and draws Figure 5 again.

# %% [markdown]
# ## Setup
#
# Real data when found: the 50 annotated `yes/` images, with their masks exported twice (COCO polygons
# and PNGs, drawn with CVAT rather than Labelbox). Otherwise a phantom set, whose generator also writes
# the exact tumor masks. Quick mode trains at 64x64 with 8 base filters; the full run at 128x128.

# %%
import json
import time
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from PIL import Image  # noqa: E402

from jaxmri.config import SegmentConfig  # noqa: E402
from jaxmri.data.crop import crop_resize  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.images import read_image  # noqa: E402
from jaxmri.data.masks import load_masks  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.evaluation import plots  # noqa: E402
from jaxmri.evaluation.metrics import segmentation_scores  # noqa: E402
from jaxmri.models import UNet, count_params  # noqa: E402
from jaxmri.training.optim import make_optimizer  # noqa: E402
from jaxmri.training.segment import aligned_masks, build_model, evaluate, fit, make_keys, training_set  # noqa: E402

from lesson_setup import FIGURES, QUICK, REAL, lesson_data, save  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 128  # Table 5 uses 256; any multiple of 16 works
WIDTH = 8  # base filters; the paper's 64 is 64x the FLOPs
EPOCHS = 10 if QUICK else 40
BATCH = 2 if QUICK else 4  # in quick mode, more (cheaper) steps per epoch
LR = 1e-3  # Table 5's caption
LOSS = "bce+dice"  # see section 4
NEGATIVES = 12  # healthy images added with empty masks (the CLI's --negatives)

DATA, SOURCE, WORK = lesson_data("lesson04")
if SOURCE == "real Kaggle data":
    COCO, PNGS = REAL / "annotations" / "tumor_polygons_coco.json", REAL / "annotations" / "masks_png"
else:
    COCO, PNGS = Path(WORK.name) / "phantom_coco.json", DATA / "masks"  # the COCO file is written below

# %% [markdown]
# ## 1. Table 5, corrected
#
# Table 5 lists four encoder blocks but gives Encoder 4 no pooling, so the bottleneck sits at 32x32; then
# four decoders each upsample 2x, which would end at 512x512, not 256x256, and Decoder 1 keeps 256x256
# right after an upsampling. The text, however, describes the standard U-Net of Ronneberger et al. (2015):
# every encoder block pools, the bottleneck has 1024 filters, every decoder block upsamples, halves the
# filters, concatenates the matching encoder map (the "skip") and refines it with two convolutions.
# `jaxmri.models.unet.UNet` builds that. Its shapes next to the paper's, at the paper's 64 base filters (built
# abstractly: no memory, no FLOPs):

# %%
PAPER_TABLE_5 = {"input": (256, 256, 1), "encoder1": (128, 128, 64), "encoder2": (64, 64, 128),
                 "encoder3": (32, 32, 256), "encoder4": (32, 32, 512), "bottleneck": (32, 32, 1024),
                 "decoder4": (64, 64, 512), "decoder3": (128, 128, 256), "decoder2": (256, 256, 128),
                 "decoder1": (256, 256, 64), "output": (256, 256, 1)}


paper_unet = nnx.eval_shape(lambda: UNet(1, 1, width=64, rngs=nnx.Rngs(0)))
ours = {name: shape[1:] for name, shape in paper_unet.stage_shapes((1, 256, 256, 1))}
print(f"{'stage':12s} {'paper Table 5':>16s} {'jaxmri UNet':>16s}")
for stage, paper in PAPER_TABLE_5.items():
    mine = ours.get(stage)
    flag = "" if mine is None or tuple(mine) == paper else "   <- differs"
    print(f"{stage:12s} {str(paper):>16s} {str(mine if mine is not None else '-'):>16s}{flag}")
print(f"parameters: {count_params(paper_unet):,} at width 64 (the paper), "
      f"{count_params(nnx.eval_shape(lambda: UNet(1, 1, width=WIDTH, rngs=nnx.Rngs(0)))):,} at width {WIDTH} (here)")

# %% [markdown]
# Section 3.1 also says the images were resized to 572x572, "the image size that U-net takes": that is
# the input of Ronneberger's U-Net with *unpadded* convolutions, whose output is smaller than its input.
# With padded ("same") convolutions, as Table 5 and the text describe, any side divisible by 16 works and
# the output has the input's size, so we follow Table 5's 256 (and use smaller sizes on a CPU).
#
# The model returns **logits**, one per pixel; the sigmoid the paper puts in its output layer lives in the
# loss instead (`optax.sigmoid_binary_cross_entropy` is stable where `log(sigmoid(x))` overflows) and in
# the prediction step.
#
# ## 2. Masks, and cropping them with their image
#
# `jaxmri.data.masks.load_masks` reads COCO polygon files, Labelbox exports and folders of mask images into
# one form: `{lower-case file stem: uint8 (H, W) mask in {0, 1}}` at the image's **original** size. It
# needs the original sizes to check every polygon against its image (a polygon outside the image means
# it was drawn on another image or another resolution: an error, not a silent clip).

# %%
data = load_image_folder(DATA, image_size=IMAGE_SIZE, channels=1, progress=False)  # Section 3.1: grayscale
sizes = {}
for path, (h, w) in zip(data.paths, data.sizes):
    sizes.setdefault(Path(path).stem.lower(), (int(h), int(w)))

if SOURCE == "phantom data":
    # Give the phantoms a COCO file too, written the way an annotation tool exports outlines: one polygon
    # per connected region, vertices in pixel-corner coordinates (pixel centres are at +0.5).
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "tumor"}]}
    for i, file in enumerate(sorted(PNGS.glob("*.png"))):
        mask = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE) > 0
        height, width = mask.shape
        coco["images"].append({"id": i, "file_name": f"yes/{file.name}", "height": height, "width": width})
        outlines, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for outline in outlines:
            if len(outline) >= 3:
                polygon = (outline[:, 0, :] + 0.5).ravel().tolist()
                coco["annotations"].append({"id": len(coco["annotations"]), "image_id": i, "category_id": 1,
                                            "iscrowd": 0, "segmentation": [polygon]})
    COCO.write_text(json.dumps(coco))

from_coco, from_png = load_masks(COCO, sizes), load_masks(PNGS, sizes)
common = sorted(set(from_coco) & set(from_png))
agreement = [segmentation_scores(from_png[s][None], from_coco[s][None])["dice"][0] for s in common]
print(f"{len(from_coco)} masks from {COCO.name}, {len(from_png)} from {PNGS.name}/; on {len(common)} images "
      f"the two exports agree with Dice {np.mean(agreement):.3f} on average (lowest {np.min(agreement):.3f})")

# %% [markdown]
# Every image was cropped to its brain box before resizing (lesson 1). A mask must get **the same box**,
# and must be resized with nearest-neighbour interpolation: any other interpolation invents in-between
# values along the outline, and a mask is a yes/no answer per pixel. `jaxmri.training.segment.aligned_masks`
# does exactly this for every annotated image and returns the masks next to `data.images`.

# %%
index, masks = aligned_masks(data, COCO, IMAGE_SIZE)
print(f"{len(index)} annotated images -> masks {masks.dtype} {masks.shape}, values {np.unique(masks)}")
first = index[0]
stem = Path(data.paths[first]).stem.lower()
box = tuple(data.boxes[first])
nearest = crop_resize(from_coco[stem], box, IMAGE_SIZE, cv2.INTER_NEAREST)
linear = crop_resize(from_coco[stem].astype(np.float32), box, IMAGE_SIZE, cv2.INTER_LINEAR)
print(f"{data.paths[first]}: nearest gives {len(np.unique(nearest))} values and equals aligned_masks: "
      f"{np.array_equal(nearest, masks[0, :, :, 0])}; bilinear gives {len(np.unique(linear))} values")

fig, axes = plt.subplots(2, 3, figsize=(8, 5.2))
for col, j in enumerate(range(min(3, len(index)))):
    i = index[j]
    stem = Path(data.paths[i]).stem.lower()
    original = read_image(data.root / data.paths[i])
    x0, y0, x1, y1 = data.boxes[i]
    axes[0, col].imshow(original)
    axes[0, col].contour(from_coco[stem], levels=[0.5], colors="red", linewidths=1)
    axes[0, col].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1))
    axes[0, col].set_title(f"{data.paths[i]}\noriginal, box and mask", fontsize=8)
    axes[1, col].imshow(data.images[i, :, :, 0], cmap="gray")
    axes[1, col].contour(masks[j, :, :, 0], levels=[0.5], colors="red", linewidths=1)
    axes[1, col].set_title(f"cropped, {IMAGE_SIZE}x{IMAGE_SIZE}, same box", fontsize=8)
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
save(fig, "04_mask_crop.png")

# %% [markdown]
# ## 3. Scoring a segmentation: Dice, IoU, pixel accuracy
#
# Pixel accuracy, the share of pixels labelled correctly, sounds natural, but a tumor covering 1 % of
# the image lets a model that predicts "no tumor anywhere" score 99 %. Dice (`2 |P and T| / (|P| + |T|)`)
# and IoU, the Jaccard index (`|P and T| / |P or T|`), only count the tumor pixels, so that model scores 0.
#
# Both are 0/0 when the truth and the prediction are empty, as on a healthy scan. `jaxmri.evaluation.metrics` states
# its rule: then Dice = IoU = 1 (nothing to find, nothing found), and any predicted pixel on an empty
# truth gives 0. Sensitivity (share of tumor pixels found) is undefined there and left out of averages.

# %%
truth = np.zeros((5, 64, 64), np.uint8)
pred = np.zeros_like(truth)
truth[0:3, 28:34, 28:34] = 1  # a small tumor: 36 of 4,096 pixels
pred[1, 28:34, 30:36] = 1  # found, but shifted 2 pixels
pred[2, 28:34, 28:34] = 1  # found exactly
pred[4, 5, 5] = 1  # one false-positive pixel on a healthy scan
cases = ["small tumor, predict nothing", "small tumor, shifted 2 px", "small tumor, exact",
         "healthy, predict nothing", "healthy, one false pixel"]
scores = segmentation_scores(truth, pred)
print(f"{'case':30s} {'pixel acc':>9s} {'Dice':>6s} {'IoU':>6s} {'sens.':>6s}")
for i, case in enumerate(cases):
    print(f"{case:30s} {scores['pixel_accuracy'][i]:9.4f} {scores['dice'][i]:6.3f} {scores['iou'][i]:6.3f} "
          f"{scores['sensitivity'][i]:6.3f}")

# %% [markdown]
# ## 4. Training
#
# The split keeps duplicate groups together and is stratified by "has a tumor" (some annotated real
# images are byte-identical copies of each other: Y10/Y37, Y14/Y17, Y15/Y34, Y30/Y38). We add a few
# healthy images with empty masks, so the model also has to learn to say "nothing here".
#
# The loss is `"bce+dice"`: the paper's pixel-wise cross-entropy plus a soft Dice term. Pure
# cross-entropy is dominated by the many background pixels, and a short run with it tends to spend its
# first epochs predicting "all background", which already gives low loss and high pixel accuracy
# (exercise 1 lets you watch that). `train_step` applies the same random flip and rotation to image and
# mask (nearest-neighbour for the mask) and blurs only the image.

# %%
CFG = SegmentConfig(image_size=IMAGE_SIZE, width=WIDTH, epochs=EPOCHS, batch_size=BATCH, lr=LR, loss=LOSS,
                    negatives=NEGATIVES, seed=0)  # what `python -m jaxmri.train segment` builds from its flags
key_init, key_data, key_negatives = make_keys(CFG.seed)
index, masks = training_set(data, COCO, CFG.image_size, CFG.negatives, key_negatives)
images = data.images[index]
has_tumor = (masks.reshape(len(masks), -1).max(1) > 0).astype(np.int32)
split = grouped_stratified_split(has_tumor, data.groups[index], test_fraction=CFG.test_fraction,
                                 val_fraction=CFG.val_fraction, seed=CFG.seed)
arrays = {"image": images, "mask": masks}
print(f"{len(index)} images ({has_tumor.sum()} with tumor): " + ", ".join(f"{p} {len(i)}" for p, i in split.items()))

# %% [markdown]
# The loop is `jaxmri.training.segment.fit`, the one `python -m jaxmri.train segment` runs: for each
# epoch, `train_epoch` (shuffle and augment with `fold_in(key_data, epoch)`, one `train_step` per
# batch), then `evaluate` on the validation and test parts (Dice, IoU, pixel accuracy, sensitivity of
# the thresholded prediction). It returns one record per epoch and the epoch with the best validation
# Dice; the command also saves that epoch's checkpoint.

# %%
model = build_model(CFG, key_init)
optimizer = make_optimizer(model, lr=CFG.lr, weight_decay=CFG.weight_decay)  # the paper gives no weight decay
start = time.perf_counter()
history, best_epoch = fit(CFG, model, optimizer, arrays, split, key_data, progress=False)
print(f"{EPOCHS} epochs in {time.perf_counter() - start:.1f} s; best validation Dice at epoch {best_epoch}")

epochs = [r["epoch"] for r in history]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
left.plot(epochs, [r["train_loss"] for r in history], color="tab:red", marker=".")
left.set(xlabel="epoch", ylabel=f"train loss ({LOSS})", title="training loss")
for part, style in (("val", "--"), ("test", "-")):
    right.plot(epochs, [r[f"{part}_dice"] for r in history], style, color="tab:blue", marker=".", label=f"{part} Dice")
    right.plot(epochs, [r[f"{part}_pixel_accuracy"] for r in history], style, color="tab:gray",
               label=f"{part} pixel accuracy")
right.set(xlabel="epoch", ylim=(0, 1.02), title=f"U-Net width {WIDTH}, {IMAGE_SIZE}px, {SOURCE}")
right.legend(fontsize=7)
fig.tight_layout()
save(fig, "04_training.png")

# %% [markdown]
# Read the two curves together. Pixel accuracy starts high and barely moves: most pixels are background.
# Dice is what shows learning. If Dice sits at a small constant for a few epochs, look at the test set:
# a model that predicts empty masks everywhere scores 0 on every tumor image and 1 on every healthy one
# (the empty-mask rule), so Dice is then the share of healthy images in the test part.
#
# ## 5. Figure 5 again
#
# Input, ground truth and prediction for test images, tumors first, then a healthy scan (where the right
# answer is an empty mask). Scores per image make the empty-mask rule visible.

# %%
test = split["test"]
per_image, probs = evaluate(model, images[test], masks[test], batch_size=CFG.batch_size, threshold=CFG.threshold)
order = np.concatenate([np.flatnonzero(has_tumor[test] == 1)[:3], np.flatnonzero(has_tumor[test] == 0)[:1]])
titles = [f"{Path(data.paths[index[test[j]]]).name}: Dice {per_image['dice'][j]:.2f}" for j in order]
overlay_path = FIGURES / "04_overlays.png"
plots.overlays(images[test][order] / 255.0, masks[test][order], (probs[order] > 0.5).astype(np.float32), overlay_path,
               titles=titles, max_rows=len(order))
shown = Image.open(overlay_path).convert("RGB")  # keep the file small: 80 % size, 256 colours
shown = shown.resize((shown.width * 4 // 5, shown.height * 4 // 5), Image.LANCZOS)
shown.quantize(256).save(overlay_path, optimize=True)
print(f"figure: {overlay_path} ({overlay_path.stat().st_size / 1024:.0f} KB)")
for name, rows in (("tumor", has_tumor[test] == 1), ("healthy", has_tumor[test] == 0)):
    if rows.any():
        print(f"test {name:7s} images: " + ", ".join(f"{k} {np.nanmean(v[rows]):.3f}" for k, v in per_image.items()
                                                    if not (name == "healthy" and k == "sensitivity")))

# %% [markdown]
# `python -m jaxmri.train segment --data ... --masks ...` runs this same pipeline with checkpoints, best
# epoch chosen by validation Dice, and per-image scores in `metrics.json`.
#
# ## Exercises
#
# Each checker recomputes the scores with its own NumPy code; import them with
# `from checks.lesson_04 import check_all_background, check_healthy_predictions, check_interpolation`.
#
# 1. Set `LOSS = "bce"` (the paper's loss) and re-run the training. Score the all-background prediction
#    on the test part (`segmentation_scores(masks[test], np.zeros_like(masks[test]))`, then `mean_scores`)
#    and check it with `check_all_background(masks[test], pixel_accuracy, dice, history)`, which also
#    counts the epochs in which the model predicted exactly that. You should see roughly pixel accuracy
#    0.96 to 0.97 with Dice equal to the healthy share of the test part (about 0.16 to 0.18), for most
#    or all of the quick run's epochs. What single number would the paper have reported?
# 2. Set `NEGATIVES = 0` and re-run. Then predict on the healthy images (`data.labels == 0`; none was
#    trained on) with `evaluate(model, images, empty_masks, ...)`, count the false-positive pixels per
#    image and check them and the Dice with `check_healthy_predictions(probs, false_pixels, dice)`. In
#    quick mode you should see roughly half of the healthy scans with stray tumor pixels and a mean Dice
#    near 0.45 (the count swings a lot with the number of epochs), where the run above, with negatives,
#    scored its healthy test images near 1. Why does the choice of empty-mask rule change the average so
#    much?
# 3. Resize the annotated masks with `cv2.INTER_LINEAR` (as float32) instead of `cv2.INTER_NEAREST` in
#    `crop_resize`, threshold at 0.5 and at 0.01, and compute each one's Dice against the
#    nearest-neighbour mask; check with `check_interpolation(original_masks, boxes, IMAGE_SIZE, dice_half,
#    dice_low)`. You should see a mean Dice of roughly 0.92, lower for the smallest tumors. Where along
#    the outline do the differences sit, and why do they matter more for small tumors?
