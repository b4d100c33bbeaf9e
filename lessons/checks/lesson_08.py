"""Checkers for lesson 8 (comparing recipes honestly): each recomputes the answer from the
cross-validation summaries (``cross_validate``'s ``cv.json`` payload) or from its definition."""

import numpy as np

from checks import expect, expect_close, ok
from jaxmri.evaluation.bootstrap import group_bootstrap

# README.md, "Cross-validated": a ResCNN round validates on about 31 images; the grid scored about 0.8.
README_VAL_IMAGES, README_VAL_ACCURACY, README_ROUNDS = 31, 0.8, 5


def _same_folds(summary_a: dict, summary_b: dict, exercise: int) -> None:
    def folds(summary):
        return {(r.get("repeat", 0), r["path"]): r["fold"] for r in summary["out_of_fold_predictions"]}

    expect(folds(summary_a) == folds(summary_b), exercise,
           "the two summaries were not run on the same folds (same data, --folds and seed), so a paired "
           "comparison means nothing; rerun both with the same settings")


def check_fold_differences(diffs, standard_error: float, summary_a: dict, summary_b: dict,
                           metric: str = "accuracy") -> None:
    """Per-round ``b - a`` of ``metric`` and the standard error of their mean (exercise 1)."""
    _same_folds(summary_a, summary_b, 1)
    rounds_a = {r["name"]: r[metric] for r in summary_a["rounds"]}
    rounds_b = {r["name"]: r[metric] for r in summary_b["rounds"]}
    expect(list(rounds_a) == list(rounds_b), 1, f"the rounds differ: {list(rounds_a)} vs {list(rounds_b)}")
    want = np.array([rounds_b[name] - rounds_a[name] for name in rounds_a])
    got = np.asarray(diffs, np.float64).ravel()
    expect(got.shape == want.shape, 1, f"{len(got)} differences for {len(want)} rounds: one per round")
    expect(not (np.allclose(got, -want, atol=1e-9) and np.any(want)), 1,
           "those are a - b; the exercise asks for b - a (the stronger recipe minus the paper's)")
    expect_close(got, want, 1, f"per-round {metric} differences", atol=1e-9)
    k = len(want)
    expect(k > 1, 1, "a standard error needs at least two rounds")
    want_se = float(np.std(want, ddof=1) / np.sqrt(k))
    expect(not (np.isclose(standard_error, np.std(want) / np.sqrt(k), atol=1e-9) and want_se > 1e-12), 1,
           "that used ddof=0; the sample standard deviation over the rounds takes ddof=1")
    expect(not (np.isclose(standard_error, np.std(want, ddof=1), atol=1e-9) and want_se > 1e-12), 1,
           "that is the standard deviation of the differences; divide it by sqrt(number of rounds)")
    expect_close(standard_error, want_se, 1, "standard error of the mean difference", atol=1e-9)
    ok(1, f"mean {metric} difference {want.mean():+.3f}, standard error {want_se:.3f} over {k} paired rounds")


def _paired_correct(summary_a: dict, summary_b: dict):
    rows_a = {r["path"]: r for r in summary_a["out_of_fold_predictions"]}
    rows_b = {r["path"]: r for r in summary_b["out_of_fold_predictions"]}
    paths = sorted(rows_a)
    correct = [np.array([(rows[p]["probability"] >= 0.5) == bool(rows[p]["label"]) for p in paths], np.float64)
               for rows in (rows_a, rows_b)]
    groups = np.array([rows_a[p]["group"] for p in paths])
    return correct[0], correct[1], groups


def check_paired_bootstrap(interval, larger_than_noise: bool, summary_a: dict, summary_b: dict) -> None:
    """The group-bootstrap 95% interval of the paired pooled accuracy difference ``b - a``, and whether it
    excludes 0 (exercise 2)."""
    _same_folds(summary_a, summary_b, 2)
    expect(sorted(r["path"] for r in summary_a["out_of_fold_predictions"])
           == sorted(r["path"] for r in summary_b["out_of_fold_predictions"]), 2,
           "the two summaries did not predict the same images once each")
    correct_a, correct_b, groups = _paired_correct(summary_a, summary_b)
    d = correct_b - correct_a
    diff = float(d.mean())
    expect_close(diff, summary_b["pooled"]["accuracy"] - summary_a["pooled"]["accuracy"], 2,
                 "mean of correct_b - correct_a (it must equal the difference of the pooled accuracies)", atol=1e-9)
    low, high = group_bootstrap(lambda rows: float(d[rows].mean()), groups, resamples=2000, seed=0)
    got = np.asarray(interval, np.float64).ravel()
    expect(got.shape == (2,) and got[0] <= got[1], 2, "pass the interval as (low, high), low <= high")
    expect(got[0] - 0.02 <= diff <= got[1] + 0.02, 2,
           f"the observed difference {diff:+.3f} should lie inside its own interval ({got[0]:.3f}, {got[1]:.3f})")
    a_low, a_high = summary_a["pooled_95ci"]["accuracy"]
    b_low, b_high = summary_b["pooled_95ci"]["accuracy"]
    unpaired = (b_low - a_high, b_high - a_low)
    expect(not (np.allclose(got, unpaired, atol=0.01) and not np.allclose(unpaired, (low, high), atol=0.03)), 2,
           "that combines the two separate intervals; bootstrap the per-image differences correct_b - correct_a")
    expect(bool(np.all(np.abs(got - (low, high)) <= 0.035)), 2,
           f"interval ({got[0]:.3f}, {got[1]:.3f}); resampling whole duplicate groups of the per-image "
           f"differences gives about ({low:.3f}, {high:.3f})")
    decided = bool(got[0] > 0 or got[1] < 0)
    expect(isinstance(larger_than_noise, (bool, np.bool_)) and bool(larger_than_noise) == decided, 2,
           f"your interval ({got[0]:.3f}, {got[1]:.3f}) {'excludes' if decided else 'includes'} 0, so "
           f"larger_than_noise should be {decided}")
    overlap = max(a_low, b_low) <= min(a_high, b_high)
    ok(2, f"paired accuracy difference {diff:+.3f}, 95% CI ({low:.3f}, {high:.3f}): "
          f"{'larger than' if decided else 'not larger than'} its noise; the separate intervals "
          f"{'overlap' if overlap else 'do not overlap'}")


def check_validation_noise(one_image: float, se_round: float, se_mean: float) -> None:
    """One validation image's worth, and the binomial standard errors of README's validation scores
    (exercise 3)."""
    n, p, k = README_VAL_IMAGES, README_VAL_ACCURACY, README_ROUNDS
    want_round = float(np.sqrt(p * (1 - p) / n))
    expect_close(one_image, 1 / n, 3, "one validation image's share of the accuracy", atol=5e-4)
    expect(not np.isclose(se_round, np.sqrt(p * (1 - p)) / n, atol=5e-4), 3,
           "divide p (1 - p) by n before the square root: sqrt(p (1 - p) / n)")
    expect_close(se_round, want_round, 3, "standard error of one round's validation accuracy", atol=5e-4)
    expect(not np.isclose(se_mean, want_round / k, atol=5e-4), 3,
           f"the standard error of a mean of {k} independent values shrinks by sqrt({k}), not by {k}")
    expect_close(se_mean, want_round / np.sqrt(k), 3, f"standard error of the mean over {k} rounds", atol=5e-4)
    ok(3, f"one image {1 / n:.3f}, one round's standard error {want_round:.3f}, the {k}-round mean's "
          f"{want_round / np.sqrt(k):.3f}: more than the grid's 0.025 spread")
