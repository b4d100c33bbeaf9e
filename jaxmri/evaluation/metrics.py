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


def binary_scores(labels: np.ndarray, tumor_probability: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, sensitivity, specificity, F1 and ROC-AUC of tumor probabilities.

    ``labels``: (N,) in {0, 1} (1 = tumor); ``tumor_probability``: (N,) in [0, 1]; a probability at or
    above ``threshold`` predicts tumor (0.5: the arg-max of two softmax outputs, ties to tumor).
    Balanced accuracy = (sensitivity + specificity) / 2; F1 = 2 tp / (2 tp + fp + fn). Undefined
    values (a class absent) are NaN.
    """
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(tumor_probability, np.float64)
    preds = (probs >= threshold).astype(np.int64)
    report = classification_report(labels, preds)
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    return {"accuracy": report["accuracy"],
            "balanced_accuracy": (report["sensitivity"] + report["specificity"]) / 2,
            "sensitivity": report["sensitivity"], "specificity": report["specificity"],
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "roc_auc": roc_auc(labels, probs)}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random tumor image scores above a random healthy one
    (ties count one half), i.e. the Mann-Whitney U statistic / (n_pos * n_neg). NaN with one class."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties (1-based).
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]
