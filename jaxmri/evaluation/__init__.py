"""Scoring and drawing results (paper Section 4's future work).

==================  ==========================================================================
``metrics``         confusion matrix, sensitivity / specificity, balanced accuracy, F1, ROC-AUC; Dice, IoU,
                    pixel accuracy
``plots``           learning curves, confusion matrix, Figure 5 overlays, per-fold bars, ROC curves
``localisation``    does Grad-CAM look at the tumor (pointing game, mass inside, centred baseline)
``folds``           grouped, stratified k-fold and each round's train / validation / test parts
``bootstrap``       95% intervals that resample whole duplicate groups
``crossval``        ``python -m jaxmri.evaluate``: k-fold with model selection on validation only
==================  ==========================================================================
"""

from jaxmri.evaluation.metrics import (binary_scores, classification_report, confusion_matrix, mean_scores, roc_auc,
                                       segmentation_scores)

__all__ = ["binary_scores", "classification_report", "confusion_matrix", "mean_scores", "roc_auc",
           "segmentation_scores"]
