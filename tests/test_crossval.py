"""Cross-validation: grouped stratified folds, the new metrics, group bootstrap, and ``python -m jaxmri.evaluate``."""

import json
import subprocess
import sys

import numpy as np
import pytest

from jaxmri.config import ClassifyConfig
from jaxmri.evaluate import main
from jaxmri.evaluation.bootstrap import group_bootstrap
from jaxmri.evaluation.crossval import parse_grid
from jaxmri.evaluation.folds import fold_split, grouped_stratified_folds
from jaxmri.evaluation.metrics import binary_scores, roc_auc, roc_curve


def _data(seed=0, n_groups=60):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_groups)  # duplicate groups of 1-3 images
    groups = np.repeat(np.arange(n_groups), sizes)
    labels = np.repeat(rng.integers(0, 2, n_groups), sizes)
    return labels, groups


@pytest.mark.parametrize("k", [2, 5])
def test_folds_cover_every_image_once_keep_groups_whole_and_balance_classes(k):
    labels, groups = _data()
    folds = grouped_stratified_folds(labels, groups, k, seed=3)
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(len(labels)))
    for i, a in enumerate(folds):
        for b in folds[i + 1:]:
            assert not set(groups[a]) & set(groups[b])
    share = labels.mean()
    for f in folds:
        assert abs(labels[f].mean() - share) < 0.12
        assert abs(len(f) - len(labels) / k) <= 4
    assert [f.tolist() for f in folds] == [f.tolist() for f in grouped_stratified_folds(labels, groups, k, seed=3)]
    assert [f.tolist() for f in folds] != [f.tolist() for f in grouped_stratified_folds(labels, groups, k, seed=4)]


def test_fold_split_carves_validation_from_the_training_folds_only():
    labels, groups = _data(1)
    folds = grouped_stratified_folds(labels, groups, 4, seed=0)
    split = fold_split(labels, groups, folds, 2, val_fraction=0.2, seed=0)
    assert np.array_equal(split["test"], folds[2])
    assert not set(split["val"]) & set(folds[2]) and not set(split["train"]) & set(folds[2])
    assert not set(groups[split["val"]]) & set(groups[split["train"]])
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == len(labels)


def test_too_many_folds_for_a_class_is_a_clear_error():
    labels, groups = np.array([0, 0, 1, 1, 1]), np.array([0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match="class 0 has only 1 distinct"):
        grouped_stratified_folds(labels, groups, 2)


def test_roc_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random(40), 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert roc_auc(labels, scores) == pytest.approx(pairwise)
    fpr, tpr = roc_curve(labels, scores)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(pairwise)
    assert np.isnan(roc_auc(np.ones(3), np.arange(3)))


def test_binary_scores():
    s = binary_scores([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.4, 0.7])
    assert s["accuracy"] == pytest.approx(3 / 5)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(1 / 2)
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert s["roc_auc"] == pytest.approx(3 / 6)  # 0.9 > both, 0.6 > 0.4: 3 of 6 pairs


def test_group_bootstrap_resamples_whole_groups():
    groups = np.array([0, 0, 0, 0, 1, 2])  # group 0 holds four copies of one value
    values = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    seen = []
    lo, hi = group_bootstrap(lambda rows: seen.append(rows) or values[rows].mean(), groups, resamples=300, seed=0)
    assert all(np.isin(r, [0, 1, 2, 3]).sum() % 4 == 0 for r in seen)  # group 0 comes in whole
    assert 0.0 <= lo <= hi <= 1.0 and lo < 0.5 < hi


def test_parse_grid():
    assert parse_grid(None, ClassifyConfig) == [{}]
    grid = parse_grid(["lr=1e-4,1e-3", "weight-decay=0,4e-4"], ClassifyConfig)
    assert grid == [{"lr": 1e-4, "weight_decay": 0.0}, {"lr": 1e-4, "weight_decay": 4e-4},
                    {"lr": 1e-3, "weight_decay": 0.0}, {"lr": 1e-3, "weight_decay": 4e-4}]
    assert parse_grid(["epochs=2,3"], ClassifyConfig) == [{"epochs": 2}, {"epochs": 3}]
    for bad, match in [(["lr"], "FIELD=V1"), (["colour=1"], "not a tunable"), (["seed=1,2"], "not a tunable"),
                       (["lr=fast"], "not a valid float")]:
        with pytest.raises(ValueError, match=match):
            parse_grid(bad, ClassifyConfig)


def _tiny(out, *extra):
    return ["classify", "--epochs", "2", "--image-size", "32", "--batch-size", "8", "--folds", "3",
            "--bootstrap", "200", "--out", str(out), *extra]


def test_evaluate_classify_writes_folds_pooled_predictions_and_resumes(tmp_path, phantom_dir, capsys):
    out = tmp_path / "cv"
    assert main(_tiny(out, "--data", str(phantom_dir))) == 0
    cv = json.loads((out / "cv.json").read_text())
    n = 20  # the phantom_dir fixture's images
    oof = cv["out_of_fold_predictions"]
    assert len(oof) == n and len({row["path"] for row in oof}) == n  # every image predicted exactly once
    assert len(cv["rounds"]) == 3
    for name in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "roc_auc"):
        assert name in cv["mean_sd"] and name in cv["pooled"]
        lo, hi = cv["pooled_95ci"][name]
        assert np.isnan(lo) or lo <= hi
    for f in (1, 2, 3):
        fold = out / f"fold{f}"
        assert (fold / "checkpoint").is_dir() and (fold / "config.json").is_file() and (fold / "fold.json").is_file()
        metrics = json.loads((fold / "metrics.json").read_text())
        assert metrics["split_sizes"]["test"] == 0  # the selection run never saw its test fold
    for name in ("cv.md", "folds.png", "roc.png"):
        assert (out / name).is_file()
    # Resume: a lost round is redone, the finished ones are kept as they are.
    kept = (out / "fold1" / "fold.json").read_text()
    (out / "fold2" / "fold.json").unlink()
    capsys.readouterr()
    assert main(_tiny(out, "--data", str(phantom_dir))) == 0
    log = capsys.readouterr().out
    assert "fold1: finished earlier, kept" in log and "fold2 done" in log
    assert (out / "fold1" / "fold.json").read_text() == kept
    again = json.loads((out / "cv.json").read_text())
    assert again["pooled"] == cv["pooled"]  # same seed, same numbers
    # Other settings into the same directory: refused, naming what differs.
    assert main(_tiny(out, "--data", str(phantom_dir), "--lr", "0.01")) == 2
    assert "config" in capsys.readouterr().err


def test_evaluate_tune_chooses_per_round_on_validation(tmp_path, phantom_dir):
    out = tmp_path / "tune"
    assert main(_tiny(out, "--data", str(phantom_dir), "--folds", "2", "--tune", "lr=1e-3,1e-2")) == 0
    cv = json.loads((out / "cv.json").read_text())
    for f in (1, 2):
        fold = json.loads((out / f"fold{f}" / "fold.json").read_text())
        assert [c["point"] for c in fold["candidates"]] == [{"lr": 1e-3}, {"lr": 1e-2}]
        best = max(fold["candidates"], key=lambda c: tuple(c["val_score"]))
        assert fold["chosen"]["val_score"] == best["val_score"]
        for c in fold["candidates"]:  # only the chosen candidate keeps a checkpoint
            assert (out / c["run"] / "checkpoint").is_dir() == (c["run"] == fold["chosen"]["run"])
    assert cv["settings"]["grid"] == [{"lr": 1e-3}, {"lr": 1e-2}]


def test_evaluate_segment_on_the_phantom(tmp_path, phantom_dir):
    out = tmp_path / "seg"
    assert main(["segment", "--data", str(phantom_dir), "--masks", str(phantom_dir / "masks"), "--epochs", "1",
                 "--width", "4", "--image-size", "32", "--folds", "2", "--bootstrap", "100", "--out", str(out)]) == 0
    cv = json.loads((out / "cv.json").read_text())
    assert {"dice", "iou", "pixel_accuracy", "sensitivity"} <= set(cv["pooled"])
    assert len(cv["out_of_fold_predictions"]) == len({r["path"] for r in cv["out_of_fold_predictions"]})
    assert (out / "folds.png").is_file()


@pytest.mark.parametrize("flags, message", [
    (["--folds", "1"], "--folds must be at least 2"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--tune", "colour=red"], "not a tunable field"),
    (["--folds", "50"], "fewer than --folds 50"),
])
def test_evaluate_bad_flags_are_one_line_errors(tmp_path, phantom_dir, flags, message):
    result = subprocess.run([sys.executable, "-m", "jaxmri.evaluate", *_tiny(tmp_path / "x", "--data", str(phantom_dir)),
                             *flags], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_evaluate_repeats_report_seed_to_seed_variation(tmp_path, phantom_dir):
    out = tmp_path / "rep"
    assert main(_tiny(out, "--data", str(phantom_dir), "--folds", "2", "--repeats", "2", "--epochs", "1")) == 0
    cv = json.loads((out / "cv.json").read_text())
    assert [r["name"] for r in cv["rounds"]] == ["repeat1-fold1", "repeat1-fold2", "repeat2-fold1", "repeat2-fold2"]
    assert len(cv["per_repeat_mean"]["accuracy"]) == 2 and "repeat_sd" in cv
    assert len(cv["out_of_fold_predictions"]) == 2 * 20  # every image once per repeat
    assert "Seed-to-seed variation" in (out / "cv.md").read_text()


def test_roc_figure_draws_folds_in_blues_and_pooled_in_black(tmp_path, monkeypatch):
    """No fold curve takes the red the other figures reserve for the tumor class, however many folds."""
    from jaxmri.evaluation import plots

    drawn = []
    monkeypatch.setattr(plots.plt, "close", drawn.append)  # keep the figure to read its lines
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    curves = [(f"fold {k}", labels, rng.random(40)) for k in range(10)] + [("pooled", labels, rng.random(40))]
    plots.roc_figure(curves, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").is_file()
    from matplotlib.colors import to_rgb

    colour = {line.get_label().split(" (AUC")[0]: to_rgb(line.get_color()) for line in drawn[0].axes[0].get_lines()}
    folds = [colour[name] for name, _, _ in curves[:-1]]
    assert all(b > r and b > g for r, g, b in folds) and len(set(folds)) == 10
    assert colour["pooled"] == (0.0, 0.0, 0.0)
