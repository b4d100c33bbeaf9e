"""Checkers for lesson 4 (U-Net segmentation): each recomputes the scores with its own NumPy code."""

import cv2
import numpy as np

from checks import expect, expect_close, ok
from jaxmri.data.crop import crop_resize


def _flat(masks) -> np.ndarray:
    masks = np.asarray(masks)
    return masks.reshape(len(masks), -1) > 0


def check_all_background(test_masks, pixel_accuracy: float, dice: float, history=None) -> None:
    """Mean pixel accuracy and mean Dice over the test images of a prediction that is empty everywhere
    (exercise 1); with ``history`` (``fit``'s records), also how many epochs the model predicted exactly that."""
    truth = _flat(test_masks)
    expect(truth.any(), 1, "pass the test part's masks (masks[split['test']]); these hold no tumor pixel")
    want_accuracy = float(np.mean(1.0 - truth.mean(1)))  # every background pixel right, every tumor pixel wrong
    want_dice = float(np.mean(~truth.any(1)))  # empty-mask rule: 1 on a healthy image, 0 on a tumor image
    expect_close(pixel_accuracy, want_accuracy, 1, "pixel accuracy of the all-background prediction", atol=1e-9)
    expect_close(dice, want_dice, 1, "Dice of the all-background prediction (1 on healthy, 0 on tumor images)",
                 atol=1e-9)
    note = ""
    if history is not None:
        stuck = [r["epoch"] for r in history if abs(r["test_dice"] - want_dice) < 1e-9
                 and abs(r["test_pixel_accuracy"] - want_accuracy) < 1e-9]
        note = f"; the model predicted all background in {len(stuck)} of {len(history)} epochs {stuck}"
    ok(1, f"all background scores pixel accuracy {want_accuracy:.4f} but Dice {want_dice:.3f} "
          f"(the healthy share){note}")


def check_healthy_predictions(probs, false_pixels, dice, threshold: float = 0.5) -> None:
    """Per healthy image: the number of predicted tumor pixels (``probs > threshold``) and its Dice under
    the empty-mask rule, for tumor probabilities ``probs`` (N, S, S, 1) (exercise 2)."""
    predicted = _flat(np.asarray(probs) > threshold)
    want_pixels = predicted.sum(1)
    want_dice = (want_pixels == 0).astype(np.float64)  # empty truth: Dice 1 only for an empty prediction
    expect_close(np.asarray(false_pixels, np.float64), want_pixels, 2, "false-positive pixels per image")
    expect_close(np.asarray(dice, np.float64), want_dice, 2, "Dice per healthy image (empty truth: 1 for an empty "
                                                            "prediction, 0 for any predicted pixel)")
    ok(2, f"{int((want_pixels > 0).sum())} of {len(want_pixels)} healthy scans get false tumor pixels "
          f"(median {np.median(want_pixels):.0f}, most {want_pixels.max()}); mean Dice {want_dice.mean():.3f}")


def _dice(truth: np.ndarray, pred: np.ndarray) -> float:
    t, p = truth > 0, pred > 0
    total = t.sum() + p.sum()
    return 1.0 if total == 0 else float(2 * (t & p).sum() / total)


def check_interpolation(masks, boxes, size: int, dice_half, dice_low) -> None:
    """Per mask (original size, uint8 {0, 1}) and its image's crop box: the Dice between the bilinear crop
    (``cv2.INTER_LINEAR`` on float32) thresholded at 0.5 (``dice_half``) and at 0.01 (``dice_low``) and
    the nearest-neighbour crop (exercise 3)."""
    expect(len(masks) == len(boxes) == len(dice_half) == len(dice_low) > 0, 3,
           "one box and two Dice values per mask")
    half, low, area = [], [], []
    for mask, box in zip(masks, boxes):
        nearest = crop_resize(np.asarray(mask, np.uint8), tuple(box), size, cv2.INTER_NEAREST)
        linear = crop_resize(np.asarray(mask, np.float32), tuple(box), size, cv2.INTER_LINEAR)
        half.append(_dice(nearest, linear > 0.5))
        low.append(_dice(nearest, linear > 0.01))
        area.append(int((nearest > 0).sum()))
    expect_close(dice_half, half, 3, "Dice at threshold 0.5", atol=1e-9)
    expect_close(dice_low, low, 3, "Dice at threshold 0.01", atol=1e-9)
    order = np.argsort(area)
    third = max(len(order) // 3, 1)
    small, large = np.asarray(low)[order[:third]].mean(), np.asarray(low)[order[-third:]].mean()
    ok(3, f"mean Dice {np.mean(half):.3f} at 0.5, {np.mean(low):.3f} at 0.01; at 0.01 the smallest third of the "
          f"tumors {small:.3f}, the largest {large:.3f}")
