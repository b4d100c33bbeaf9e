"""Checkers for lesson 7 (segmentation losses and metrics): each compares with the library or with jax.grad."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from checks import expect, ok
from jaxmri.evaluation.metrics import segmentation_scores
from jaxmri.training.losses import segmentation_loss


def _random_masks(rng: np.random.Generator, n: int = 200, side: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of binary masks (n, side, side): a quarter with an empty truth, some empty predictions."""
    density = rng.random((n, 1, 1)) * 0.3
    truth = (rng.random((n, side, side)) < density).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.1, 1 - truth, truth)
    truth[: n // 4] = 0  # empty truths: half of them with an empty prediction too
    pred[: n // 8] = 0
    pred[n // 4: n // 4 + 10] = 0  # tumors missed entirely
    return truth, pred


def check_dice_iou(dice_iou) -> None:
    """``dice_iou(truth, pred)`` -> per-image ``(dice, iou)``, equal to ``segmentation_scores`` (exercise 1)."""
    truth, pred = _random_masks(np.random.default_rng(7))
    want = segmentation_scores(truth, pred)
    got = dice_iou(truth, pred)
    expect(isinstance(got, tuple) and len(got) == 2, 1, "return a pair (dice, iou) of per-image arrays")
    dice, iou = (np.asarray(v, np.float64) for v in got)
    expect(dice.shape == iou.shape == (len(truth),), 1, f"one Dice and one IoU per image: shapes {dice.shape}, "
                                                        f"{iou.shape}, expected ({len(truth)},)")
    both_empty = (truth.reshape(len(truth), -1).max(1) == 0) & (pred.reshape(len(pred), -1).max(1) == 0)
    expect(not np.isnan(dice).any() and not np.isnan(iou).any(), 1,
           "some scores are NaN: an empty truth with an empty prediction is 0/0; the rule makes it 1")
    expect(bool(np.allclose(dice[both_empty], 1.0) and np.allclose(iou[both_empty], 1.0)), 1,
           "truth and prediction both empty must score Dice = IoU = 1 (nothing to find, nothing found)")
    for name, mine, theirs in (("Dice", dice, want["dice"]), ("IoU", iou, want["iou"])):
        wrong = np.flatnonzero(~np.isclose(mine, theirs, atol=1e-9))
        expect(not len(wrong), 1, f"{name} differs from segmentation_scores on {len(wrong)} of {len(truth)} images "
                                  f"(first: image {wrong[0] if len(wrong) else ''}); Dice = 2 tp / (2 tp + fp + fn), "
                                  "IoU = tp / (tp + fp + fn)")
    ok(1, f"Dice and IoU equal segmentation_scores on {len(truth)} pairs, {both_empty.sum()} of them both empty")


def _bce_pull_by_grad(area_hw: tuple[int, int], image_hw: tuple[int, int], z: float) -> float:
    mask = jnp.zeros((1, *image_hw, 1)).at[0, : area_hw[0], : area_hw[1], 0].set(1.0)
    grad = jax.grad(lambda logits: segmentation_loss(logits, mask, jnp.ones(1), "bce"))(jnp.full(mask.shape, z))
    return float(-jnp.sum(grad * mask))


def check_bce_pull(bce_tumor_pull) -> None:
    """``bce_tumor_pull(area, pixels, z)`` must equal the summed -d BCE / d logit over the tumor (exercise 2)."""
    cases = (((2, 2), (64, 64), -3.0), ((32, 32), (64, 64), -3.0), ((3, 2), (32, 48), 0.5), ((5, 6), (20, 20), -6.0))
    for tumor, image, z in cases:
        area, pixels = tumor[0] * tumor[1], image[0] * image[1]
        want = _bce_pull_by_grad(tumor, image, z)
        got = float(bce_tumor_pull(area, pixels, z))
        expect(bool(np.isclose(got, want, rtol=1e-4)), 2,
               f"a {area}-pixel tumor in {pixels} pixels at logit {z}: you give {got:.4g}, jax.grad gives {want:.4g} "
               "(BCE is a mean over all pixels; d/dz of the BCE of one pixel is sigmoid(z) - t)")
    ok(2, "your formula equals jax.grad of segmentation_loss(..., 'bce') on 4 tumors")


def check_paste_back(paste_nearest) -> None:
    """``paste_nearest(square_mask, box, size)``: nearest-neighbour into the box, zeros elsewhere (exercise 3)."""
    rng = np.random.default_rng(11)
    for side, (height, width) in ((8, (40, 60)), (32, (217, 180)), (16, (300, 301))):
        square = rng.random((side, side)) < 0.3
        x0, y0 = int(rng.integers(0, width // 3)), int(rng.integers(0, height // 3))
        x1, y1 = int(rng.integers(x0 + side // 2, width + 1)), int(rng.integers(y0 + side // 2, height + 1))
        got = np.asarray(paste_nearest(square, (x0, y0, x1, y1), (height, width)))
        expect(got.shape == (height, width), 3, f"the pasted mask must have the scan's shape {(height, width)} "
                                                f"(H, W), got {got.shape}")
        expect(bool(np.isin(got, (0, 1)).all()), 3, "a mask holds only 0/1 (or False/True) values")
        outside = np.ones(got.shape, bool)
        outside[y0:y1, x0:x1] = False
        expect(not got[outside].any(), 3, "tumor pixels outside the crop box: paste into [y0:y1, x0:x1] only")
        want = cv2.resize(square.astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST) > 0
        differ = int(np.sum(got[y0:y1, x0:x1].astype(bool) != want))
        expect(differ == 0, 3, f"{differ} pixels inside the box differ from cv2.resize(..., (x1 - x0, y1 - y0), "
                               "interpolation=cv2.INTER_NEAREST); note cv2 takes (width, height)")
    ok(3, "pasted masks have the scan's shape, lie inside the box and are nearest-neighbour resizes")
