"""Checkers for lesson 5 (evaluating honestly): each recomputes the answer from its definition, with its
own code and its own random draws, so a wrong formula or a lucky number does not pass."""

import numpy as np

from checks import expect, expect_close, ok

Z95 = 1.959964  # the 97.5% point of the standard normal


def check_rates(rates) -> None:
    """``rates(cm)`` -> ``(sensitivity, specificity, balanced accuracy)`` of a 2x2 confusion matrix
    ``[[tn, fp], [fn, tp]]`` (rows = truth, columns = prediction, tumor = class 1), exercise 1."""
    rng = np.random.default_rng(5)
    cases = [np.array([[12, 14], [10, 32]]), np.array([[40, 0], [3, 57]]), np.array([[5, 20], [1, 2]])]
    cases += [rng.integers(1, 60, (2, 2)) for _ in range(5)]
    for cm in cases:
        (tn, fp), (fn, tp) = cm
        want = np.array([tp / (tp + fn), tn / (tn + fp), (tp / (tp + fn) + tn / (tn + fp)) / 2])
        got = np.asarray(rates(cm.copy()), np.float64)
        expect(got.shape == (3,), 1, f"return three numbers (sensitivity, specificity, balanced accuracy), got {got}")
        transposed = np.array([tp / (tp + fp), tn / (tn + fn)])  # rows and columns swapped: precision-like values
        expect(not (np.allclose(got[:2], transposed) and not np.allclose(transposed, want[:2])), 1,
               f"for {cm.tolist()} you divided by the column sums: rows are the truth, so sensitivity = "
               "tp / (tp + fn), the tumors found among all tumors")
        expect(not np.allclose(got[:2], want[1::-1]) or np.allclose(want[0], want[1]), 1,
               f"for {cm.tolist()} sensitivity and specificity are swapped: sensitivity is about the tumor row")
        expect_close(got, want, 1, f"rates of {cm.tolist()}", rtol=1e-9)
    ok(1, "sensitivity 0.762, specificity 0.462, balanced accuracy 0.612 for [[12, 14], [10, 32]]")


def check_interval_width(width: float, n_needed: int) -> None:
    """The 95% bootstrap interval's width for 68 test images at 80% accuracy, and the smallest test set
    whose interval is at most +-5 points at 80% (exercise 2)."""
    rng = np.random.default_rng(11)
    n, p = 68, 0.80
    draws = rng.binomial(n, round(p * n) / n, 40_000) / n  # resampling 68 images = a binomial draw
    lo, hi = np.percentile(draws, [2.5, 97.5])
    want = hi - lo
    expect(not abs(width - want / 2) < 0.015, 2, f"{width:.3f} is the half-width (+-); the interval's width is "
                                                  "hi - lo, about twice that")
    expect(abs(width - want) <= 0.025, 2, f"a 95% interval for n={n} at {p:.0%} is about {want:.3f} wide "
                                          f"(sd sqrt(p(1-p)/n) = {np.sqrt(p * (1 - p) / n):.3f}); got {width:.4f}")
    formula = Z95 ** 2 * p * (1 - p) / 0.05 ** 2
    expect(abs(int(n_needed) - formula) <= 0.08 * formula, 2,
           f"half-width 1.96 sqrt(p(1-p)/n) <= 0.05 needs n of about {formula:.0f}; got {n_needed}")
    ok(2, f"width {width:.3f} (+-{width / 2:.3f}) with 68 images; about {int(n_needed)} images for +-5 points")


def check_selection_bias(chosen_on_test: float, chosen_on_val: float) -> None:
    """Nine equally good candidates (true accuracy 0.65), 68 test images and 31 validation images:
    the mean reported test accuracy when the best is chosen on the test images, and when it is chosen
    on the validation images (exercise 3)."""
    rng = np.random.default_rng(23)
    trials, k, p = 40_000, 9, 0.65
    test = rng.binomial(68, p, (trials, k)) / 68
    val = rng.binomial(31, p, (trials, k)) / 31
    on_test = float(test.max(1).mean())
    on_val = float(test[np.arange(trials), val.argmax(1)].mean())
    expect(abs(chosen_on_test - p) > 0.03, 3, "choosing on the test images should report MORE than 0.65: "
                                              "take each trial's best test score, then average over trials")
    expect(abs(chosen_on_test - on_test) <= 0.012, 3, f"choosing on test reports about {on_test:.3f} on average; "
                                                      f"got {chosen_on_test:.4f}")
    expect(abs(chosen_on_val - on_val) <= 0.012, 3, f"choosing on validation, the chosen candidate's TEST accuracy "
                                                    f"averages about {on_val:.3f} (no bias); got {chosen_on_val:.4f}")
    ok(3, f"best on test reports {chosen_on_test:.3f} (+{chosen_on_test - p:.3f} of pure luck); chosen on "
          f"validation {chosen_on_val:.3f}")
