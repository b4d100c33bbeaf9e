"""Scoring and drawing results: ``metrics`` (confusion matrix, sensitivity / specificity, Dice, IoU,
pixel accuracy; paper Section 4's future work) and ``plots`` (learning curves, confusion matrix,
Figure 5 overlays)."""

from jaxmri.evaluation.metrics import classification_report, confusion_matrix, mean_scores, segmentation_scores

__all__ = ["classification_report", "confusion_matrix", "mean_scores", "segmentation_scores"]
