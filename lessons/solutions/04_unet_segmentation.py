# %% [markdown]
# # Lesson 4, worked solutions
#
# Run it like the lesson (`python lessons/solutions/04_unet_segmentation.py`); each exercise ends with
# its checker's `exercise K: ok` line. Exercises 1 and 2 each train the lesson's U-Net once more with the
# library's `fit`, changing one setting; the masks come from the PNG files of the phantoms, or the COCO
# file of the real set.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

import dataclasses  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from checks.lesson_04 import check_all_background, check_healthy_predictions, check_interpolation  # noqa: E402
from jaxmri.config import SegmentConfig  # noqa: E402
from jaxmri.data.crop import crop_resize  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.masks import load_masks  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.evaluation.metrics import mean_scores, segmentation_scores  # noqa: E402
from jaxmri.training.optim import make_optimizer  # noqa: E402
from jaxmri.training.segment import build_model, evaluate, fit, make_keys, training_set  # noqa: E402

from lesson_setup import QUICK, REAL, lesson_data  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 128
CFG = SegmentConfig(image_size=IMAGE_SIZE, width=8, epochs=10 if QUICK else 40, batch_size=2 if QUICK else 4,
                    lr=1e-3, loss="bce+dice", negatives=12, seed=0)  # the lesson's settings

DATA, SOURCE, WORK = lesson_data("lesson04-solutions")
MASKS = REAL / "annotations" / "tumor_polygons_coco.json" if SOURCE == "real Kaggle data" else DATA / "masks"
data = load_image_folder(DATA, image_size=IMAGE_SIZE, channels=1, progress=False)


def train(cfg):
    """The lesson's pipeline for ``cfg``: masks and negatives, the stratified split, ``fit``."""
    key_init, key_data, key_negatives = make_keys(cfg.seed)
    index, masks = training_set(data, MASKS, cfg.image_size, cfg.negatives, key_negatives)
    has_tumor = (masks.reshape(len(masks), -1).max(1) > 0).astype(np.int32)
    split = grouped_stratified_split(has_tumor, data.groups[index], test_fraction=cfg.test_fraction,
                                     val_fraction=cfg.val_fraction, seed=cfg.seed)
    model = build_model(cfg, key_init)
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, _ = fit(cfg, model, optimizer, {"image": data.images[index], "mask": masks}, split, key_data,
                     progress=False)
    return model, history, index, masks, split


# %% [markdown]
# ## 1. The paper's loss alone
#
# With pure BCE the model first learns the cheapest answer, "no tumor anywhere". While it does, the test
# Dice equals the share of healthy test images (empty-mask rule: 1 there, 0 on every tumor image) and the
# pixel accuracy that of the all-background prediction, about 0.96 to 0.97 here: a number that looks excellent.
# Reported alone, as pixel accuracy, it says nothing about the tumors. (To stay quick, this run stops
# after 6 epochs in quick mode; the lesson's 10 show the same plateau.)

# %%
model, history, index, masks, split = train(dataclasses.replace(CFG, loss="bce", epochs=6 if QUICK else CFG.epochs))
test_masks = masks[split["test"]]
empty = mean_scores(segmentation_scores(test_masks, np.zeros_like(test_masks)))
print(f"all background on the test part: pixel accuracy {empty['pixel_accuracy']:.4f}, Dice {empty['dice']:.3f}")
check_all_background(test_masks, empty["pixel_accuracy"], empty["dice"], history)

# %% [markdown]
# ## 2. No healthy images in training
#
# Trained on tumor images only, the model has never been told that "nothing" is a possible answer. On
# healthy scans, every false-positive pixel turns the image's Dice from 1 into 0: the empty-mask rule
# makes each healthy image all-or-nothing, so a few stray pixels per scan can pull the average down more
# than a whole set of well-outlined tumors lifts it. Under a rule that left empty truths out, the same
# model would look flawless on healthy scans.

# %%
model, history, index, masks, split = train(dataclasses.replace(CFG, negatives=0))
healthy = np.flatnonzero(data.labels == 0)  # none of them was trained on
scores, probs = evaluate(model, data.images[healthy], np.zeros((len(healthy), IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8),
                         batch_size=CFG.batch_size, threshold=CFG.threshold)
false_pixels = (probs > CFG.threshold).reshape(len(healthy), -1).sum(1)
print(f"{len(healthy)} healthy scans: {np.mean(false_pixels > 0):.0%} with false tumor pixels, "
      f"mean Dice {scores['dice'].mean():.3f}")
check_healthy_predictions(probs, false_pixels, scores["dice"], threshold=CFG.threshold)

# %% [markdown]
# ## 3. Bilinear masks
#
# Bilinear interpolation blends the 0 and 1 on each side of the outline, so the differences from the
# nearest-neighbour mask sit in a one-pixel band along the outline: a low threshold (0.01) keeps the
# whole band and grows the mask, 0.5 keeps about half of it. The band's area grows with the outline's
# length, the tumor's with its square, so the smaller the tumor, the larger its share of error.

# %%
sizes, first = {}, {}
for i, (path, (h, w)) in enumerate(zip(data.paths, data.sizes)):
    sizes.setdefault(Path(path).stem.lower(), (int(h), int(w)))
    first.setdefault(Path(path).stem.lower(), i)
originals = load_masks(MASKS, sizes)
stems = sorted(originals)
boxes = [tuple(data.boxes[first[stem]]) for stem in stems]
dice_half, dice_low = [], []
for stem, box in zip(stems, boxes):
    nearest = crop_resize(originals[stem], box, IMAGE_SIZE, cv2.INTER_NEAREST)
    linear = crop_resize(originals[stem].astype(np.float32), box, IMAGE_SIZE, cv2.INTER_LINEAR)
    for threshold, out in ((0.5, dice_half), (0.01, dice_low)):
        out.append(segmentation_scores(nearest[None], (linear > threshold)[None])["dice"][0])
print(f"{len(stems)} masks: mean Dice {np.mean(dice_half):.3f} at 0.5, {np.mean(dice_low):.3f} at 0.01")
check_interpolation([originals[s] for s in stems], boxes, IMAGE_SIZE, dice_half, dice_low)
