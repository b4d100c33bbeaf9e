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
# 1. shows that Table 5 cannot be built as printed, and what `jaxmri.unet.UNet` builds instead;
# 2. reads masks from a COCO polygon file and from PNG files with `jaxmri.masks`, and crops each mask with
#    **its own image's** brain box, so image and mask stay aligned;
# 3. explains why pixel accuracy is a poor score for small tumors, and the rule for empty masks;
# 4. trains a small U-Net with `jaxmri.segment_steps.train_step` and draws Figure 5 again.

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
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from PIL import Image  # noqa: E402

from jaxmri import plots  # noqa: E402
from jaxmri.batching import epoch_batches, gather  # noqa: E402
from jaxmri.crop import crop_resize  # noqa: E402
from jaxmri.dataset import load_image_folder  # noqa: E402
from jaxmri.images import read_image  # noqa: E402
from jaxmri.masks import load_masks  # noqa: E402
from jaxmri.metrics import mean_scores, segmentation_scores  # noqa: E402
from jaxmri.optim import make_optimizer  # noqa: E402
from jaxmri.segment import aligned_masks  # noqa: E402
from jaxmri.segment_steps import predict_step, train_step  # noqa: E402
from jaxmri.split import grouped_stratified_split  # noqa: E402
from jaxmri.unet import UNet  # noqa: E402

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
# `jaxmri.unet.UNet` builds that. Its shapes next to the paper's, at the paper's 64 base filters (built
# abstractly: no memory, no FLOPs):

# %%
PAPER_TABLE_5 = {"input": (256, 256, 1), "encoder1": (128, 128, 64), "encoder2": (64, 64, 128),
                 "encoder3": (32, 32, 256), "encoder4": (32, 32, 512), "bottleneck": (32, 32, 1024),
                 "decoder4": (64, 64, 512), "decoder3": (128, 128, 256), "decoder2": (256, 256, 128),
                 "decoder1": (256, 256, 64), "output": (256, 256, 1)}


def parameters(model: nnx.Module) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


paper_unet = nnx.eval_shape(lambda: UNet(1, 1, width=64, rngs=nnx.Rngs(0)))
if hasattr(paper_unet, "stage_shapes"):
    ours = {name: shape[1:] for name, shape in paper_unet.stage_shapes((1, 256, 256, 1))}
else:  # only the input and output are visible from outside the model
    out = nnx.eval_shape(lambda m, x: m(x), paper_unet, jax.ShapeDtypeStruct((1, 256, 256, 1), jnp.float32))
    ours = {"input": (256, 256, 1), "output": out.shape[1:]}
print(f"{'stage':12s} {'paper Table 5':>16s} {'jaxmri UNet':>16s}")
for stage, paper in PAPER_TABLE_5.items():
    mine = ours.get(stage)
    flag = "" if mine is None or tuple(mine) == paper else "   <- differs"
    print(f"{stage:12s} {str(paper):>16s} {str(mine if mine is not None else '-'):>16s}{flag}")
print(f"parameters: {parameters(paper_unet):,} at width 64 (the paper), "
      f"{parameters(nnx.eval_shape(lambda: UNet(1, 1, width=WIDTH, rngs=nnx.Rngs(0)))):,} at width {WIDTH} (here)")

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
# `jaxmri.masks.load_masks` reads COCO polygon files, Labelbox exports and folders of mask images into
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
# values along the outline, and a mask is a yes/no answer per pixel. `jaxmri.segment.aligned_masks`
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
# Both are 0/0 when the truth and the prediction are empty, as on a healthy scan. `jaxmri.metrics` states
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
healthy = np.flatnonzero(data.labels == 0)
extra = np.sort(np.random.default_rng(0).choice(healthy, min(NEGATIVES, len(healthy)), replace=False))
index = np.concatenate([index, extra])
masks = np.concatenate([masks, np.zeros((len(extra),) + masks.shape[1:], np.uint8)])
images = data.images[index]
has_tumor = (masks.reshape(len(masks), -1).max(1) > 0).astype(np.int32)
split = grouped_stratified_split(has_tumor, data.groups[index], test_fraction=0.27, val_fraction=0.15, seed=0)
arrays = {"image": images, "mask": masks}
print(f"{len(index)} images ({has_tumor.sum()} with tumor): " + ", ".join(f"{p} {len(i)}" for p, i in split.items()))


def predict(model: nnx.Module, indices: np.ndarray) -> np.ndarray:
    """Tumor probabilities (N, S, S, 1) of ``images[indices]``, un-augmented."""
    out = [np.asarray(predict_step(model, gather(arrays, rows, w)))[w > 0] for rows, w in epoch_batches(indices, BATCH)]
    return np.concatenate(out)


key = jax.random.key(0)
model = UNet(1, 1, width=WIDTH, rngs=nnx.Rngs(0))
optimizer = make_optimizer(model, lr=LR, weight_decay=0.0)  # the paper gives no weight decay for the U-Net
history = []
start = time.perf_counter()
for epoch in range(EPOCHS):
    key_shuffle, key_augment = jax.random.split(jax.random.fold_in(key, epoch))
    total = count = 0.0
    for step, (rows, w) in enumerate(epoch_batches(split["train"], BATCH, key_shuffle)):
        out = train_step(model, optimizer, gather(arrays, rows, w), jax.random.fold_in(key_augment, step), loss=LOSS)
        total, count = total + float(out["loss_sum"]), count + float(out["count"])
    record = {"epoch": epoch + 1, "train_loss": total / count}
    for part in ("val", "test"):
        part_scores = mean_scores(segmentation_scores(masks[split[part]], predict(model, split[part]) > 0.5))
        record.update({f"{part}_{name}": value for name, value in part_scores.items()})
    history.append(record)
    print(f"epoch {epoch + 1:2d}: loss {record['train_loss']:.3f}  test Dice {record['test_dice']:.3f}  "
          f"IoU {record['test_iou']:.3f}  pixel accuracy {record['test_pixel_accuracy']:.4f}")
print(f"{EPOCHS} epochs in {time.perf_counter() - start:.1f} s")

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
probs = predict(model, test)
per_image = segmentation_scores(masks[test], probs > 0.5)
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
# 1. Set `LOSS = "bce"` (the paper's loss) and re-run. For how many epochs does the test Dice stay at 0,
#    and what is the pixel accuracy meanwhile? What single number would the paper have reported?
# 2. Set `NEGATIVES = 0`. Then predict on a few healthy images: how many false-positive pixels appear,
#    and what is their mean Dice under the empty-mask rule? Why does the choice of rule change the
#    average so much?
# 3. Resize a mask with `cv2.INTER_LINEAR` instead of `cv2.INTER_NEAREST` in `crop_resize`, threshold at
#    0.5 and at 0.01, and compute the Dice against the nearest-neighbour mask. Where along the outline do
#    the differences sit, and why do they matter more for small tumors?
