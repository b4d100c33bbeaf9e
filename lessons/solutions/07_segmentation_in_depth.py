# %% [markdown]
# # Lesson 7, worked solutions
#
# Run it like the lesson (`python lessons/solutions/07_segmentation_in_depth.py`); each exercise ends
# with its checker's `exercise K: ok` line. Exercise 3 needs soft S x S predictions; to stay cheap this
# file makes them from the true masks (cropped, shrunk to S x S and blurred, a stand-in for a U-Net's
# probabilities) instead of training the lesson's U-Net again.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from checks.lesson_07 import check_bce_pull, check_dice_iou, check_paste_back  # noqa: E402
from jaxmri.data.crop import brain_crop, crop_resize  # noqa: E402
from jaxmri.data.images import read_image  # noqa: E402
from jaxmri.data.masks import load_masks  # noqa: E402
from jaxmri.evaluation.metrics import segmentation_scores  # noqa: E402
from jaxmri.inference.outputs import paste_back  # noqa: E402

from lesson_setup import QUICK, REAL, lesson_data  # noqa: E402

IMAGE_SIZE = 32 if QUICK else 64
DATA, SOURCE, WORK = lesson_data("lesson07-solutions")
MASKS = REAL / "annotations" / "tumor_polygons_coco.json" if SOURCE == "real Kaggle data" else DATA / "masks"


# %% [markdown]
# ## Exercise 1: Dice and IoU with the empty-mask rule

# %%
def dice_iou(truth, pred):
    t = np.asarray(truth).reshape(len(truth), -1) > 0
    p = np.asarray(pred).reshape(len(pred), -1) > 0
    tp, fp, fn = ((t & p).sum(1), (~t & p).sum(1), (t & ~p).sum(1))
    union = tp + fp + fn
    safe = np.maximum(union, 1)
    dice = np.where(union == 0, 1.0, 2 * tp / (tp + safe))  # 2 tp + fp + fn = tp + union
    iou = np.where(union == 0, 1.0, tp / safe)
    return dice, iou


check_dice_iou(dice_iou)


# %% [markdown]
# ## Exercise 2: BCE's pull on the tumor
#
# BCE = mean over N pixels of `-t log p - (1 - t) log(1 - p)`; its derivative in pixel i's logit is
# `(p - t_i) / N`. On a tumor pixel that is `-(1 - p) / N`, so the tumor's total pull is
# `area / N * (1 - sigmoid(z))`: proportional to the area, at any logit.

# %%
def bce_tumor_pull(area, pixels, z):
    return area / pixels * (1.0 - 1.0 / (1.0 + np.exp(-z)))


print(f"2x2 tumor on 64x64 at z = -3: {bce_tumor_pull(4, 64 * 64, -3.0):.3g}; "
      f"32x32: {bce_tumor_pull(1024, 64 * 64, -3.0):.3g} ({1024 / 4:.0f} times more)")
check_bce_pull(bce_tumor_pull)


# %% [markdown]
# ## Exercise 3: nearest-neighbour paste vs the library's bilinear-then-threshold

# %%
def paste_nearest(square_mask, box, size):
    x0, y0, x1, y1 = (int(v) for v in box)
    out = np.zeros(tuple(int(v) for v in size), bool)
    out[y0:y1, x0:x1] = cv2.resize(np.asarray(square_mask, np.uint8), (x1 - x0, y1 - y0),
                                   interpolation=cv2.INTER_NEAREST) > 0
    return out


check_paste_back(paste_nearest)

scans = {f.stem.lower(): read_image(f) for f in sorted((DATA / "yes").iterdir())}
truths = load_masks(MASKS, {stem: rgb.shape[:2] for stem, rgb in scans.items()}, skip_unmatched=True)
between, to_truth = [], {"bilinear": [], "nearest": []}
outline_share = []
for stem, truth in truths.items():
    rgb = scans[stem]
    _, box = brain_crop(rgb, IMAGE_SIZE, channels=1)
    soft = cv2.GaussianBlur(crop_resize(truth.astype(np.float32), box, IMAGE_SIZE, cv2.INTER_AREA), (3, 3), 0)
    smooth = paste_back(soft, box, rgb.shape[:2]) > 0.5
    blocky = paste_nearest(soft > 0.5, box, rgb.shape[:2])
    if not smooth.any() and not blocky.any():
        continue
    between.append(segmentation_scores(smooth[None], blocky[None])["dice"][0])
    for name, mask in (("bilinear", smooth), ("nearest", blocky)):
        to_truth[name].append(segmentation_scores(truth[None], mask[None])["dice"][0])
    differ = smooth != blocky
    edge = cv2.dilate(blocky.astype(np.uint8), np.ones((3, 3), np.uint8)) != cv2.erode(blocky.astype(np.uint8),
                                                                                     np.ones((3, 3), np.uint8))
    step = int(np.ceil(max(box[2] - box[0], box[3] - box[1]) / IMAGE_SIZE))
    near_edge = cv2.dilate(edge.astype(np.uint8), np.ones((2 * step + 1, 2 * step + 1), np.uint8)) > 0
    outline_share.append(float(np.mean(near_edge[differ])) if differ.any() else 1.0)
print(f"{len(between)} annotated scans, {IMAGE_SIZE}x{IMAGE_SIZE} soft predictions: Dice(bilinear, nearest) "
      f"mean {np.mean(between):.3f} (lowest {np.min(between):.3f}); against the true mask: bilinear "
      f"{np.mean(to_truth['bilinear']):.3f}, nearest {np.mean(to_truth['nearest']):.3f}; share of the differing "
      f"pixels within one S-step of the outline: {np.mean(outline_share):.3f}")
