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
# # Lesson 7: Segmentation losses and metrics in depth (paper Sections 3.2 and 4)
#
# The paper trains its U-Net with pixel-wise cross-entropy (Section 3.2, Table 5) and judges it by eye
# (Figure 5); its conclusion (Section 4) names "pixel accuracy or the Jaccard Index" as the measures
# to add. Lesson 4 trained the U-Net with `bce+dice` and scored it with Dice; this lesson looks at why,
# and at what happens after the model: getting a mask back onto the scan the radiologist sees.
#
# You will be able to
#
# 1. show with `jax.grad` how much pull the tumor pixels get under BCE and under soft Dice
#    (`jaxmri.training.losses.segmentation_loss`) as the tumor shrinks, and what the "all background"
#    prediction scores under each loss and metric;
# 2. read and apply the empty-mask rule of `jaxmri.evaluation.metrics.segmentation_scores` (what Dice
#    means on a scan with no tumor) and see how it moves an average;
# 3. relate Dice, IoU (the Jaccard index) and pixel accuracy;
# 4. train a tiny U-Net with `jaxmri.training.segment.run`, load it back with `jaxmri.inference.load_run`,
#    predict scans it never saw, and paste each mask back at the scan's own size
#    (`jaxmri.inference.outputs.paste_back`), as `python -m jaxmri.predict` does.

# %% [markdown]
# ## Setup
#
# Real data when found (the 50 annotated scans of `annotations/tumor_polygons_coco.json`), else
# phantoms with their exact masks. Quick mode trains a 4-filter U-Net at 32x32 for 12 short epochs
# (learning rate 0.003); the full run 8 filters at 64x64 for 40 epochs at Table 5's 0.001. Runs and
# predictions go to the temporary folder `WORK`.

# %%
import inspect
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

from jaxmri.config import SegmentConfig  # noqa: E402
from jaxmri.data.crop import brain_crop  # noqa: E402
from jaxmri.data.images import read_image  # noqa: E402
from jaxmri.data.masks import load_masks  # noqa: E402
from jaxmri.evaluation.metrics import mean_scores, segmentation_scores  # noqa: E402
from jaxmri.inference import load_run, predict_files  # noqa: E402
from jaxmri.inference.outputs import paste_back  # noqa: E402
from jaxmri.predict import main as predict_main  # noqa: E402
from jaxmri.training import segment  # noqa: E402
from jaxmri.training.losses import segmentation_loss  # noqa: E402
from jaxmri.training.segment_steps import predict_step  # noqa: E402

from lesson_setup import FIGURES, QUICK, REAL, TUMOR, lesson_data, save  # noqa: E402

IMAGE_SIZE = 32 if QUICK else 64
WIDTH = 4 if QUICK else 8
EPOCHS = 12 if QUICK else 40
BATCH = 2 if QUICK else 4  # quick: more (cheaper) steps per epoch
LR = 3e-3 if QUICK else 1e-3  # Table 5's 0.001 in the full run; a short run takes bigger steps
DATA, SOURCE, WORK = lesson_data("lesson07")
WORKDIR = Path(WORK.name)
MASKS = REAL / "annotations" / "tumor_polygons_coco.json" if SOURCE == "real Kaggle data" else DATA / "masks"

# %% [markdown]
# ## 1. BCE and soft Dice on small tumors
#
# `segmentation_loss(logits, masks, weight, loss)` takes logits and masks of shape (B, H, W, 1):
#
# - `"bce"`: the mean over **all pixels** of the sigmoid binary cross-entropy (the paper's loss);
# - `"dice"`: per image `1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`, with `p = sigmoid(logit)`;
# - `"bce+dice"`: their sum.
#
# Take a 64x64 image with a square tumor of side 1 to 32 pixels in the middle, and a model that is
# unsure but leans to background everywhere: every logit is -3 (p = 0.047). `jax.grad` of a one-line
# function of the logits gives each pixel's gradient; we sum `-grad` over the tumor pixels, the total
# pull that raises the tumor's logits in a gradient step, and divide by the tumor's area for the pull
# per tumor pixel.

# %%
SIDE, UNSURE, SIDES = 64, -3.0, (1, 2, 4, 8, 16, 32)
LOSSES = ("bce", "dice", "bce+dice")


def square_mask(side: int) -> jnp.ndarray:
    """float32 (1, SIDE, SIDE, 1): a side x side tumor in the middle of an empty image."""
    start = (SIDE - side) // 2
    return jnp.zeros((1, SIDE, SIDE, 1)).at[0, start:start + side, start:start + side, 0].set(1.0)


def tumor_pull(loss: str, side: int, logit: float = UNSURE) -> float:
    """Sum over the tumor pixels of -d loss / d logit, at a constant logit."""
    mask = square_mask(side)
    grad = jax.grad(lambda z: segmentation_loss(z, mask, jnp.ones(1), loss))(jnp.full(mask.shape, logit))
    return float(-jnp.sum(grad * mask))


pull = {loss: np.array([tumor_pull(loss, s) for s in SIDES]) for loss in LOSSES}
areas = np.array(SIDES) ** 2
print(f"{'side':>4s} {'area':>6s} " + " ".join(f"{loss + ' total':>15s} {'per pixel':>10s}" for loss in LOSSES))
for k, side in enumerate(SIDES):
    print(f"{side:4d} {areas[k] / SIDE ** 2:6.2%} " + " ".join(f"{pull[loss][k]:15.2e} {pull[loss][k] / areas[k]:10.2e}"
                                                         for loss in LOSSES))
print(f"from a 32x32 tumor to a 1x1 one the tumor's total pull falls {pull['bce'][-1] / pull['bce'][0]:.0f}x under BCE "
      f"(its area falls {areas[-1] / areas[0]:.0f}x), {pull['dice'][-1] / pull['dice'][0]:.0f}x under Dice")

# %% [markdown]
# Under BCE, every pixel's gradient is `(p - t) / N` with N = H x W: each tumor pixel gets the same
# small pull **whatever the tumor's size**, so the tumor's total pull is proportional to its area
# (exercise 2 derives it), while the background's push stays near `p`: a tumor of a few pixels is a
# rounding error in the loss. Soft Dice divides by `sum(p) + sum(t) + 1`, the predicted plus the true
# tumor mass of *this image*: the smaller the tumor, the more each of its pixels counts, so the tumor's
# total pull falls far less than its area (the left panel below shows the pull per tumor pixel: flat
# for BCE, rising as the tumor shrinks for Dice).
#
# The loss values tell the same story. Predict "all background" confidently (logit -10): BCE calls
# that nearly perfect on a small tumor, Dice calls it bad (0.5 to 1, where 1 is the worst); pixel accuracy,
# like BCE, rewards it, and the Dice score of the thresholded prediction is 0 (section 3).

# %%
background = jnp.full((1, SIDE, SIDE, 1), -10.0)
lazy = {loss: np.array([float(segmentation_loss(background, square_mask(s), jnp.ones(1), loss)) for s in SIDES])
        for loss in ("bce", "dice")}
truths = np.concatenate([np.asarray(square_mask(s)) for s in SIDES])
lazy_scores = segmentation_scores(truths, np.zeros_like(truths))
for k, side in enumerate(SIDES):
    print(f"tumor {side:2d}x{side:<2d}: all-background BCE loss {lazy['bce'][k]:.4f}, Dice loss {lazy['dice'][k]:.3f}, "
          f"pixel accuracy {lazy_scores['pixel_accuracy'][k]:.4f}, Dice score {lazy_scores['dice'][k]:.0f}")

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
for loss, marker in zip(LOSSES, "osd"):
    left.loglog(areas, pull[loss] / areas, marker=marker, label=loss)
left.set(xlabel="tumor area (pixels of 64x64)", ylabel="pull per tumor pixel (-d loss / d logit)",
         title=f"gradient at logit {UNSURE:g}")
left.legend(fontsize=7)
right.semilogx(areas, lazy["bce"], "o-", label=f"BCE loss (up to {lazy['bce'].max():.1f})")
right.semilogx(areas, lazy["dice"], "s-", label="Dice loss")
right.semilogx(areas, lazy_scores["pixel_accuracy"], "^--", color="tab:gray", label="pixel accuracy")
right.semilogx(areas, lazy_scores["dice"], "v--", color="#2ca02c", label="Dice score")
right.set(xlabel="tumor area (pixels of 64x64)", ylim=(-0.05, 1.05), title='predicting "all background"')
right.legend(fontsize=7)
fig.tight_layout()
save(fig, "07_bce_vs_dice.png")

# %% [markdown]
# Dice has its own weakness: its gradient passes through `sigmoid'(logit)`, which vanishes once the
# model is confidently wrong, and on a tiny tumor it swings from step to step. `bce+dice` keeps BCE's
# steady per-pixel signal and adds Dice's size normalisation. On the real data README reports (U-Net
# width 32, 128x128, 150 epochs, `python -m jaxmri.train segment ... --loss bce` or `--loss bce+dice`)
# a test Dice of 0.586 with BCE and 0.674 with `bce+dice`.
#
# ## 2. The empty-mask rule
#
# Dice is `2|P and T| / (|P| + |T|)`: on a healthy scan where the model also predicts nothing, that is
# 0/0. Every library must choose; jaxmri's choice is in the code:

# %%
source = inspect.getsource(segmentation_scores)
print("\n".join(line for line in source.splitlines() if any(w in line for w in ("both_empty", "sensitivity ="))))

# %% [markdown]
# Both empty: Dice = IoU = 1 ("nothing to find, nothing found"). Empty truth, anything predicted:
# 2*0 / (fp + 0) = 0, so a **single** false pixel on a healthy scan scores 0. Sensitivity is undefined
# there (NaN) and `mean_scores` leaves it out. Pixel accuracy is always defined.
#
# The rule moves averages. Ten tumor scans plus `k` healthy ones, and two models: a "lazy" one that
# always predicts nothing, and a "careful" one that finds each tumor (Dice 0.8) but leaves one stray
# pixel on every healthy scan:

# %%
def test_set(healthy: int):
    """Truth and the two models' predictions for 10 tumor scans (8x8 tumor) + ``healthy`` empty scans."""
    truth = np.zeros((10 + healthy, 32, 32), np.uint8)
    truth[:10, 10:18, 10:18] = 1
    careful = np.zeros_like(truth)
    careful[:10, 10:18, 12:18] = 1  # 48 of 64 tumor pixels: Dice 2*48/(48+64) = 0.857
    careful[10:, 0, 0] = 1  # one stray pixel per healthy scan
    return truth, np.zeros_like(truth), careful


print(f"{'healthy scans':>13s} {'lazy: mean Dice':>16s} {'careful: mean Dice':>19s} {'careful, tumor scans only':>26s}")
for healthy in (0, 5, 10, 30):
    truth, lazy_pred, careful = test_set(healthy)
    a, b = mean_scores(segmentation_scores(truth, lazy_pred)), segmentation_scores(truth, careful)
    print(f"{healthy:13d} {a['dice']:16.3f} {b['dice'].mean():19.3f} {b['dice'][:10].mean():26.3f}")

# %% [markdown]
# With 30 healthy scans the lazy model "beats" the careful one: 30 / 40 = 0.75 against
# 10 x 0.857 / 40 = 0.21. Nothing is wrong with
# either number, but a mean Dice means little without saying how many healthy scans it averages over
# and which rule it uses. Report tumor and healthy scans separately (lesson 4 does), or use a
# per-scan rule with a tolerance if a stray pixel should not cost a whole scan.
#
# ## 3. Dice, IoU and pixel accuracy
#
# Per image, IoU = Dice / (2 - Dice), a monotone function: they always rank two predictions of one
# image the same, and IoU is the stricter number (Dice 0.8 is IoU 0.67). Means over images do not
# convert exactly, since the mean of a function is not the function of the mean. Pixel accuracy
# counts background pixels as successes and is not a function of Dice at all: on the all-background
# prediction above it is 1 - (tumor area) / N, near 1 however much tumor is missed.

# %%
rng = np.random.default_rng(0)
truth = (rng.random((200, 16, 16)) < rng.random((200, 1, 1)) * 0.3).astype(np.uint8)
pred = np.where(rng.random(truth.shape) < 0.15, 1 - truth, truth)  # flip 15 % of the pixels
s = segmentation_scores(truth, pred)
print(f"IoU == Dice / (2 - Dice) on 200 random pairs: {bool(np.allclose(s['iou'], s['dice'] / (2 - s['dice'])))}; "
      f"mean Dice {s['dice'].mean():.3f}, mean IoU {s['iou'].mean():.3f}, "
      f"mean Dice / (2 - mean Dice) {s['dice'].mean() / (2 - s['dice'].mean()):.3f}")
print(f"mean pixel accuracy {s['pixel_accuracy'].mean():.3f}; its correlation with Dice over the 200 pairs: "
      f"{np.corrcoef(s['pixel_accuracy'], s['dice'])[0, 1]:.2f}")

# %% [markdown]
# ## 4. A tiny U-Net, trained by the library
#
# `segment.run(cfg)` is `python -m jaxmri.train segment`: it reads the data, matches masks to scans,
# crops each mask with its scan's box (nearest-neighbour), adds `negatives` healthy scans with empty
# masks, splits by duplicate group, trains with `fit` and keeps the best-validation-Dice checkpoint in
# the run directory, with `config.json`, `split.json` and `metrics.json` beside it.
# (Building the U-Net takes several seconds on a CPU the first time, before the first epoch.)

# %%
CFG = SegmentConfig(data=str(DATA), masks=str(MASKS), out=str(WORKDIR / "unet"), image_size=IMAGE_SIZE, width=WIDTH,
                    epochs=EPOCHS, batch_size=BATCH, lr=LR, loss="bce+dice", negatives=8, seed=0)
start = time.perf_counter()
metrics = segment.run(CFG, progress=False)
print(f"{time.perf_counter() - start:.1f} s; best epoch {metrics['best_epoch']}: test Dice {metrics['dice']:.3f}, "
      f"IoU {metrics['iou']:.3f}, pixel accuracy {metrics['pixel_accuracy']:.3f} at {IMAGE_SIZE}x{IMAGE_SIZE}")

# %% [markdown]
# ## 5. From the model's square back to the scan
#
# The U-Net saw each scan as an S x S gray square: the brain box `(x0, y0, x1, y1)` cut out of the
# original and resized, whatever its aspect ratio. A mask is only useful on the scan itself, so
# `predict_files` (behind `python -m jaxmri.predict`) undoes the crop for every scan:
#
# 1. `read_image` + `brain_crop(rgb, S, channels=1)`: the same crop and resize as training, and the box;
# 2. `predict_step`: tumor probabilities (1, S, S, 1);
# 3. `paste_back(square, box, size)`: resize the S x S **probabilities** to the box's width and height
#    (bilinear) and place them in zeros of the scan's (H, W);
# 4. threshold at `cfg.threshold` (0.5): a binary mask of the scan's size, zero outside the box.
#
# Resizing probabilities and thresholding afterwards gives smooth outlines; resizing a thresholded
# S x S mask with nearest-neighbour (the right choice for *true* masks, lesson 4) would give staircase
# steps of about box / S pixels (exercise 3). Here are the steps by hand for the test part's tumor
# scans, checked against the files `predict_files` writes:

# %%
run = load_run(WORKDIR / "unet")
rows = json.loads((WORKDIR / "unet" / "split.json").read_text())["parts"]["test"]
tumor_rows = [r for r in rows if r["label"] == 1]  # label = "the mask has tumor pixels"
files = [str(DATA / r["path"]) for r in tumor_rows]
(WORKDIR / "predicted").mkdir()
records = predict_files(run, files, WORKDIR / "predicted", progress=False)
full_masks = load_masks(MASKS, {Path(r["path"]).stem.lower(): tuple(r["size"]) for r in rows}, skip_unmatched=True)
steps = []
for file, record in zip(files, records):
    rgb = read_image(file)
    square_input, box = brain_crop(rgb, run.cfg.image_size, channels=1)
    probs = np.asarray(predict_step(run.model, {"image": square_input[None]}))[0, :, :, 0]
    mask = paste_back(probs, box, rgb.shape[:2]) > run.cfg.threshold
    written = cv2.imread(str(WORKDIR / "predicted" / record["mask"]), cv2.IMREAD_GRAYSCALE) > 0
    assert np.array_equal(mask, written) and list(box) == record["box"]
    steps.append((rgb, square_input, probs, box, mask, full_masks[Path(file).stem.lower()]))
print(f"{len(files)} test tumor scans: the by-hand masks equal the written PNGs; first scan {Path(files[0]).name}: "
      f"{steps[0][0].shape[1]}x{steps[0][0].shape[0]}, box {steps[0][3]}, model input {steps[0][1].shape}")
dice_scan = [float(segmentation_scores(s[5][None], s[4][None])["dice"][0]) for s in steps]
per_image = {r["path"]: r["dice"] for r in metrics["per_image"]}  # the run's own test scores, at S x S
dice_square = [per_image[r["path"]] for r in tumor_rows]
print(f"mean Dice at the scan's size {np.mean(dice_scan):.3f} vs at {IMAGE_SIZE}x{IMAGE_SIZE} "
      f"{np.mean(dice_square):.3f} "
      "(the same predictions, scored against the original masks or the resized ones)")

# %% [markdown]
# The figure follows one scan through the steps: the scan with its brain box, the square input with
# the predicted probabilities, the box-sized probabilities, and the thresholded mask (yellow) on the
# scan with the true outline.

# %%
show = int(np.argmax(dice_scan))
rgb, square_input, probs, box, mask, truth_full = steps[show]
x0, y0, x1, y1 = box
fig, axes = plt.subplots(1, 4, figsize=(10, 3.6))
axes[0].imshow(rgb)
axes[0].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1))
axes[0].set_title(f"scan {rgb.shape[1]}x{rgb.shape[0]}\nand its brain box", fontsize=8)
axes[1].imshow(square_input[:, :, 0], cmap="gray")
axes[1].imshow(probs, cmap="Reds", alpha=0.5, vmin=0, vmax=1)
axes[1].set_title(f"model input {IMAGE_SIZE}x{IMAGE_SIZE}\nand its probabilities", fontsize=8)
axes[2].imshow(cv2.resize(probs, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR), cmap="Reds", vmin=0, vmax=1)
axes[2].set_title(f"probabilities resized\nto the box, {x1 - x0}x{y1 - y0}", fontsize=8)
axes[3].imshow(rgb)
axes[3].imshow(np.ma.masked_where(~mask, mask), cmap="autumn", vmin=0, vmax=1, alpha=0.6)  # yellow
axes[3].contour(truth_full, levels=[0.5], colors=TUMOR, linewidths=1.2)
axes[3].set_title(f"mask (> {run.cfg.threshold}) on the scan,\ntrue outline red: Dice {dice_scan[show]:.2f}",
                  fontsize=8)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
save(fig, "07_paste_back.png")

# %% [markdown]
# The command does the same and writes, per scan, `<name>_mask.png` (0/255, the scan's own height and
# width) and `<name>_overlay.png`, plus `predictions.jsonl` with the box, the size and the tumor
# fraction. Calling its `main` in-process runs exactly the command's code:

# %%
status = predict_main(["--run", str(WORKDIR / "unet"), "--out", str(WORKDIR / "command"), "--no-progress", *files[:3]])
first = json.loads((WORKDIR / "command" / "predictions.jsonl").read_text().splitlines()[0])
png = cv2.imread(str(WORKDIR / "command" / first["mask"]), cv2.IMREAD_GRAYSCALE)
print(f"exit status {status}; {first['mask']}: {png.shape} (the scan is {first['size']}), "
      f"{first['tumor_pixels']} tumor pixels, identical to ours: {np.array_equal(png > 0, steps[0][4])}")

# %% [markdown]
# ## Exercises
#
# 1. Write `dice_iou(truth, pred)` for binary masks (N, H, W) returning per-image `(dice, iou)` arrays
#    with jaxmri's empty-mask rule, from `tp`, `fp` and `fn` counts. Check it with
#    `from checks.lesson_07 import check_dice_iou; check_dice_iou(dice_iou)`, which compares it with
#    `segmentation_scores` on random masks, a quarter of them empty. You should see it pass only once
#    both-empty pairs give 1 and empty truths with a prediction give 0.
# 2. Derive the total BCE pull on the tumor pixels for a constant logit `z`: write
#    `bce_tumor_pull(area, pixels, z)` as a formula (no `jax.grad`) and check it with
#    `from checks.lesson_07 import check_bce_pull; check_bce_pull(bce_tumor_pull)`, which compares it
#    with `jax.grad` of `segmentation_loss`. You should find `area / pixels * (1 - sigmoid(z))`: about
#    9.3e-4 for a 2x2 tumor on 64x64 at z = -3, 256 times less than for a 32x32 tumor.
# 3. Write `paste_nearest(square_mask, box, size)`: a thresholded S x S mask resized into the box with
#    `cv2.INTER_NEAREST`, zeros elsewhere, boolean (H, W). Check it with
#    `from checks.lesson_07 import check_paste_back; check_paste_back(paste_nearest)` (shape, inside
#    the box, nearest-neighbour). Then compare `paste_nearest(probs > 0.5, box, size)` with
#    `paste_back(probs, box, size) > 0.5` on the scans of section 5 (`steps` holds `probs`, `box` and
#    the scan). You should see roughly: Dice between the two about 0.9 at 32x32 (higher at 64x64), every
#    differing pixel within one step (box / S pixels) of the outline, and the bilinear paste a little
#    closer to the true mask.
