"""Figures of a run (matplotlib, Agg backend: works without a display).

``learning_curves`` reproduces the paper's Figures 2-3 (train vs test accuracy per epoch, plus
validation); ``confusion_matrix_figure`` its confusion matrices; ``overlays`` its Figure 5 rows
(input / ground truth / prediction).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def learning_curves(epochs: list[dict], path: Path, *, keys=("train", "val", "test"), metric="accuracy", title="") -> None:
    """Plot ``<part>_<metric>`` per epoch for each part in ``keys`` (left) and the train loss (right)."""
    x = np.arange(1, len(epochs) + 1)
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for part in keys:
        name = f"{part}_{metric}"
        if epochs and name in epochs[0]:
            ax.plot(x, [e[name] for e in epochs], marker=".", label=part)
    ax.set(xlabel="epoch", ylabel=metric, title=title or f"{metric} per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    ax_loss.plot(x, [e["train_loss"] for e in epochs], color="tab:red", marker=".")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_matrix_figure(cm, class_names, path: Path, title: str = "test confusion matrix") -> None:
    """Heat map of a confusion matrix (rows = truth, columns = prediction) with counts written in."""
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > cm.max() / 2 else "black")
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xticklabels=class_names,
           yticklabels=class_names, xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def overlays(images, truths, preds, path: Path, *, titles=None, max_rows: int = 6) -> None:
    """Rows of input / ground truth / prediction (the paper's Figure 5); arrays (N, H, W[, 1]) in [0, 1]."""
    n = min(len(images), max_rows)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for row in range(n):
        panels = (images[row], truths[row], preds[row])
        names = ("input", "ground truth", "prediction")
        for col, (panel, name) in enumerate(zip(panels, names)):
            ax = axes[row, col]
            ax.imshow(np.squeeze(panel), cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            label = name if titles is None or col else f"{titles[row]}"
            ax.set_title(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fold_bars(names, values, path: Path, *, metric: str = "accuracy") -> None:
    """One bar per cross-validation round with the mean as a line (``cv/folds.png``)."""
    values = np.asarray(values, np.float64)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.6))
    ax.bar(range(len(values)), values, color="tab:blue", alpha=0.8)
    mean = float(np.nanmean(values)) if len(values) else float("nan")
    ax.axhline(mean, color="tab:red", label=f"mean {mean:.3f}")
    ax.set(xticks=range(len(names)), ylim=(0, 1), ylabel=f"test {metric}", title=f"held-out {metric} per round")
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def roc_figure(curves, path: Path) -> None:
    """ROC curves: ``curves`` = [(name, labels, tumor probabilities), ...]; a curve named "pooled" is drawn
    bold (``cv/roc.png``)."""
    from jaxmri.evaluation.metrics import roc_auc, roc_curve

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    # Folds in shades of one blue (never the red the other figures give the tumor class), pooled in black.
    folds = [name for name, _, _ in curves if name != "pooled"]
    shade = dict(zip(folds, plt.cm.Blues(np.linspace(0.45, 0.95, max(len(folds), 1)))))
    for name, labels, scores in curves:
        fpr, tpr = roc_curve(labels, scores)
        bold = name == "pooled"
        ax.plot(fpr, tpr, color="black" if bold else shade[name], lw=2.2 if bold else 1.0, alpha=1 if bold else 0.8,
                label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=0.8)
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
           title="ROC, held-out folds", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
