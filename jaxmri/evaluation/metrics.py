"""Evaluation metrics (NumPy, outside the jit boundary).

Classification (Section 2.2): accuracy, the confusion matrix ``[[tn, fp], [fn, tp]]`` with "tumor" = the
positive class 1, sensitivity = tp / (tp + fn), specificity = tn / (tn + fp).

Segmentation (the paper's future work, Section 4): pixel accuracy, Jaccard index (IoU), Dice and
sensitivity, computed per image on binary masks and then averaged over images.

Empty-mask rule (stated because every choice changes the averages): when an image's truth mask is
empty, Dice and IoU are 1 if the prediction is empty too and 0 otherwise; sensitivity is undefined
there (0/0), stored as NaN and left out of its mean. Pixel accuracy is always defined.
"""

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """int64 (num_classes, num_classes); row = truth, column = prediction."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return cm


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def classification_report(labels: np.ndarray, preds: np.ndarray) -> dict:
    """Accuracy, confusion matrix, sensitivity and specificity of binary predictions (1 = tumor)."""
    cm = confusion_matrix(labels, preds, 2)
    (tn, fp), (fn, tp) = cm
    return {
        "accuracy": _ratio(tn + tp, cm.sum()),
        "confusion_matrix": cm.tolist(),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def segmentation_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image scores of binary masks.

    Args:
      truth, pred: (N, H, W) or (N, H, W, 1) arrays; non-zero = tumor.

    Returns:
      dict of float64 (N,) arrays: ``dice``, ``iou``, ``pixel_accuracy``, ``sensitivity`` (NaN where the
      truth is empty), following the empty-mask rule in the module docstring.
    """
    t = np.asarray(truth).reshape(len(truth), -1) > 0
    p = np.asarray(pred).reshape(len(pred), -1) > 0
    tp = (t & p).sum(1).astype(np.float64)
    fp = (~t & p).sum(1).astype(np.float64)
    fn = (t & ~p).sum(1).astype(np.float64)
    both_empty = (tp + fp + fn) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(both_empty, 1.0, 2 * tp / (2 * tp + fp + fn))
        iou = np.where(both_empty, 1.0, tp / (tp + fp + fn))
        sensitivity = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
    pixel_accuracy = (t == p).mean(1)
    return {"dice": dice, "iou": iou, "pixel_accuracy": pixel_accuracy, "sensitivity": sensitivity}


def mean_scores(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over images of each per-image score (NaNs, i.e. undefined sensitivities, left out)."""
    out = {}
    for name, values in scores.items():
        values = np.asarray(values, np.float64)
        out[name] = float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")
    return out
