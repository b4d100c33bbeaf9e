# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 5: Evaluating honestly (paper Sections 2.1, 2.2 and 4)
#
# The paper reports one number per classifier: the **mean test accuracy over the 50 epochs** on one
# random split of 72 test images (Table 1, Table 4: 66.22 % for SmallCNN, 77.19 % for VGG19), and its
# conclusion (Section 4) asks for "a held out validation set" in future work. This lesson asks how
# much such a number can be trusted, and replaces it by the protocol `python -m jaxmri.evaluate` runs.
#
# You will be able to
#
# 1. say why the mean test accuracy over epochs, on one split, is not the accuracy of any model, and
#    how noisy one split of 68 test images is (about +-11 points);
# 2. read a confusion matrix as a doctor would: sensitivity (tumors found) against specificity
#    (healthy scans cleared), and the ROC curve and its area (ROC-AUC) that sum up every threshold;
# 3. run grouped, stratified k-fold cross-validation (`jaxmri.evaluation.crossval.cross_validate`),
#    where copies of a scan never sit on both sides, and every image is tested exactly once;
# 4. put a bootstrap confidence interval on a result, resampling whole duplicate groups
#    (`jaxmri.evaluation.bootstrap.group_bootstrap`);
# 5. tune hyperparameters without ever choosing on the test fold (nested selection, `--tune`).
#
# Everything trained here is trained by the library's loop (`jaxmri.training.classify.train_on_split`,
# the body of `python -m jaxmri.train classify`, and `cross_validate`, the body of
# `python -m jaxmri.evaluate classify`); the metrics are `jaxmri.evaluation.metrics`.

# %% [markdown]
# ## Setup
#
# Real data when found, else the phantom set (100 synthetic scans, no duplicates). Quick mode trains
# SmallCNN at 64x64 for 4 epochs per run with 3 folds; the full run uses 128x128, 30 epochs and 5
# folds. All run directories live in the lesson's temporary folder `WORK`.

# %%
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from jaxmri.config import ClassifyConfig  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.duplicates import count_groups  # noqa: E402
from jaxmri.data.source import split_or_explain  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.evaluate import main as evaluate_main  # noqa: E402
from jaxmri.evaluation import plots  # noqa: E402
from jaxmri.evaluation.bootstrap import group_bootstrap  # noqa: E402
from jaxmri.evaluation.crossval import cross_validate  # noqa: E402
from jaxmri.evaluation.folds import fold_split, grouped_stratified_folds  # noqa: E402
from jaxmri.evaluation.metrics import binary_scores, confusion_matrix, roc_auc, roc_curve  # noqa: E402
from jaxmri.evaluation.report import test_accuracy_interval  # noqa: E402
from jaxmri.training.classify import train_on_split, tumor_class  # noqa: E402
from jaxmri.training.rundir import start_run  # noqa: E402

from lesson_setup import FIGURES, HEALTHY, QUICK, TUMOR, lesson_data, save  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 128
EPOCHS = 4 if QUICK else 30
FOLDS = 3 if QUICK else 5
RESAMPLES = 500 if QUICK else 2000  # bootstrap resamples inside cross_validate (the command's default: 2000)
DATA, SOURCE, WORK = lesson_data("lesson05")
WORKDIR = Path(WORK.name)
CFG = ClassifyConfig(arch="cnn", data=str(DATA), out=str(WORKDIR / "single"), image_size=IMAGE_SIZE,
                     epochs=EPOCHS, batch_size=16, seed=0)  # `python -m jaxmri.train classify --arch cnn ...`

data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
TUMOR_CLASS = tumor_class(data.class_names)
is_tumor = (data.labels == TUMOR_CLASS).astype(np.int64)  # 1 = tumor, whatever the folder order
print(data.summary())

# %% [markdown]
# ## 1. One split, and the paper's metric
#
# First the paper's protocol, done as well as one split allows: a grouped, stratified split (lesson 1;
# 27 % of each class tested, 15 % of the rest for validation), one SmallCNN trained with Table 3's
# recipe, the checkpoint chosen on validation. `train_on_split` records the test accuracy after every
# epoch only so we can compute the paper's number; nothing is chosen by it.

# %%
split = split_or_explain(data.labels, data.groups, CFG)
single_dir, _ = start_run(CFG, "classify-cnn")
start = time.perf_counter()
single = train_on_split(CFG, data, split, single_dir, progress=False)
per_epoch_test = [record["test_accuracy"] for record in single["epochs"]]
single_ci = test_accuracy_interval(single_dir)  # what REPORT.md prints beside a single split's accuracy
print(f"trained in {time.perf_counter() - start:.1f} s on {len(split['train'])} images; "
      f"{len(split['test'])} test images")
print(f"mean test accuracy over the {EPOCHS} epochs (Table 4's metric): {single['mean_test_accuracy_over_epochs']:.3f}")
print(f"best-validation checkpoint (epoch {single['best_epoch']}): test accuracy {single['test_accuracy']:.3f}, "
      f"95% group-bootstrap interval {single_ci[0]:.3f}-{single_ci[1]:.3f}")

# %% [markdown]
# Two problems, before any deep learning:
#
# - **The mean over epochs is not the accuracy of a model.** No checkpoint has it: it averages early,
#   half-trained epochs with late ones, so it rewards fast learners and depends on the number of
#   epochs. And a test score computed after every epoch invites stopping at the best one, which would
#   be choosing on the test set. The usable number is the test accuracy of one checkpoint, chosen
#   without the test images (here: on validation).
# - **One split is a small sample.** With n test images and true accuracy p, the measured accuracy has
#   a standard deviation of sqrt(p (1 - p) / n). On the real set's 68 test images at p = 0.65 that is
#   5.8 points, so a 95 % interval of +-11 points: README's three runs of the same SmallCNN command
#   (`python -m jaxmri.train classify --arch cnn --epochs 50`, on different days and code versions)
#   gave 64.7 %, 67.6 % and 63.2 %, all consistent with the paper's 66.22 % and with each other. The
#   interval printed above is the library's (`jaxmri.evaluation.report.test_accuracy_interval`): 2,000
#   resamples of the test part's duplicate groups (section 4).

# %%
for n in sorted({len(split["test"]), 68, 253}):
    print(f"n = {n:3d} test images at p = 0.65: 95% interval +-{1.96 * np.sqrt(0.65 * 0.35 / n):.3f}")

# %% [markdown]
# ## 2. The confusion matrix: sensitivity and specificity
#
# Accuracy hides *which* mistakes a model makes. The confusion matrix (`metrics.confusion_matrix`)
# counts them, rows = truth and columns = prediction, tumor = the positive class:
#
#     [[tn, fp],      tn: healthy called healthy    fp: healthy called tumor (a false alarm)
#      [fn, tp]]      fn: tumor called healthy (a missed tumor)   tp: tumor called tumor
#
# - **sensitivity** = tp / (tp + fn): the share of tumors found (recall, true positive rate);
# - **specificity** = tn / (tn + fp): the share of healthy scans cleared (true negative rate).
#
# In medicine the two errors do not cost the same. A missed tumor (fn) is sent home; a false alarm
# (fp) gets a second look by a radiologist. A screening tool is therefore run at high sensitivity and
# judged by the specificity it keeps there. With 61 % tumors in the real set, a model that always says
# "tumor" has 62 % accuracy, sensitivity 1 and specificity 0: **balanced accuracy**, the mean of the
# two rates, is 0.5 for it, which is why `binary_scores` reports it too.
#
# We score the cross-validated predictions of section 3 below; for now, the single split's test part
# at the usual threshold 0.5:

# %%
test_probability = np.array([row["probabilities"][TUMOR_CLASS] for row in single["test_predictions"]])
test_truth = is_tumor[split["test"]]
cm = confusion_matrix(test_truth, (test_probability >= 0.5).astype(np.int64))
print(f"confusion matrix [[tn, fp], [fn, tp]] = {cm.tolist()}")
print({name: round(value, 3) for name, value in binary_scores(test_truth, test_probability).items()})

# %% [markdown]
# ## 3. Grouped, stratified k-fold
#
# Cross-validation cuts the images into k folds; in round i fold i is the test part and the model
# trains on the rest, so **every image is tested exactly once** and the test sample is the whole set
# (253 images instead of 68). Two details make it honest here:
#
# - **grouped**: the Kaggle set holds copies of the same scan (byte-identical files and re-saved or
#   resized ones, found by `jaxmri.data.duplicates` in lesson 1). A copy of a test image in the
#   training folds lets the model remember instead of recognise. `grouped_stratified_folds` deals whole
#   duplicate groups to folds, so copies never straddle two folds;
# - **stratified**: each class is dealt separately, so every fold has about the set's class balance.
#
# How large is the leak that grouping prevents? Below, a plain random 27 % test part, ignoring the
# groups, for 100 seeds: how many test images have a copy in the training part.

# %%
n_groups, n_multi, n_in_multi = count_groups(data.groups)
print(f"{len(data)} images in {n_groups} duplicate groups; {n_multi} groups hold {n_in_multi} images")
rng = np.random.default_rng(0)
leaks = []
for _ in range(100):
    test = rng.permutation(len(data))[: round(0.27 * len(data))]
    in_test = np.zeros(len(data), bool)
    in_test[test] = True
    train_groups = set(data.groups[~in_test].tolist())
    leaks.append(sum(int(data.groups[i]) in train_groups for i in test))
print(f"random split, groups ignored: {np.mean(leaks):.1f} of {len(test)} test images have a copy in training "
      f"(range {min(leaks)}-{max(leaks)} over 100 seeds)")

folds = grouped_stratified_folds(is_tumor, data.groups, FOLDS, seed=CFG.seed)
for f, fold in enumerate(folds):
    others = np.concatenate([g for j, g in enumerate(folds) if j != f])
    shared = set(data.groups[fold].tolist()) & set(data.groups[others].tolist())
    print(f"fold {f + 1}: {len(fold)} images, {is_tumor[fold].mean():.0%} tumor, groups shared with other folds: "
          f"{len(shared)}")
round1 = fold_split(is_tumor, data.groups, folds, 0, val_fraction=CFG.val_fraction, seed=CFG.seed)
print("round 1:", {part: len(idx) for part, idx in round1.items()}, "(validation carved from the training folds only)")

# %% [markdown]
# On the phantoms every image is its own group, so there is nothing to leak. On the real set 93 of the
# 253 images have at least one copy, so a random test part holds many images whose twin is in training
# (the count printed above): for those, the test only asks whether the model remembers. The grouped
# folds share no group at all.
#
# `cross_validate(cfg, folds=k, out=...)` runs the whole protocol: per round, `fold_split` gives
# train / validation / test; the config trains on the training part by `train_on_split` with **no test
# image at all** (its `split["test"]` is empty, so not even the per-epoch curve sees them); the best
# epoch is chosen on validation; only then is the test fold predicted, once. It writes one normal run
# directory per round, `cv.json` / `cv.md`, and prints the table: per round, mean +- sd over rounds,
# and "pooled" (all out-of-fold predictions scored together) with group-bootstrap 95 % intervals.
# `python -m jaxmri.evaluate classify --folds k ...` is exactly this call.

# %%
start = time.perf_counter()
cv = cross_validate(CFG, folds=FOLDS, resamples=RESAMPLES, out=WORKDIR / "cv", progress=False)
print(f"{FOLDS}-fold cross-validation in {time.perf_counter() - start:.1f} s")
rows = cv["out_of_fold_predictions"]
oof_truth = np.array([row["label"] for row in rows])  # already 1 = tumor
oof_probability = np.array([row["probability"] for row in rows])
oof_groups = np.array([row["group"] for row in rows])
acc, acc_ci = cv["pooled"]["accuracy"], cv["pooled_95ci"]["accuracy"]
print(f"this lesson, {SOURCE}: pooled accuracy {acc:.3f} ({acc_ci[0]:.3f}-{acc_ci[1]:.3f}) over {len(rows)} images, "
      f"ROC-AUC {cv['pooled']['roc_auc']:.3f}; mean +- sd over rounds "
      f"{cv['mean_sd']['accuracy']['mean']:.3f} +- {cv['mean_sd']['accuracy']['sd']:.3f}")

# %% [markdown]
# For the real data at full length, README's "Cross-validated" table reports the paper's SmallCNN
# recipe (`python -m jaxmri.evaluate classify --arch cnn --data ../shared/data/brain_tumor_dataset
# --folds 5 --epochs 50`, 224x224): accuracy 0.644 +- 0.068 over the 5 rounds, pooled 0.644 (95 %
# interval 0.571-0.716), sensitivity 0.723, specificity 0.522, pooled ROC-AUC 0.671 (0.587-0.747).
# The paper's 66.22 % lies inside that interval; so does 57 %. Its ResCNN recipe (`--arch rescnn
# --image-size 128`) reaches 0.715 (0.650-0.777) and ROC-AUC 0.772. The rounds differ by several
# points: that spread is what one split hides.
#
# The confusion matrix of all out-of-fold predictions, and where the threshold sits: on the right, the
# predicted tumor probability of every image, by its true class. Moving the threshold left finds more
# tumors (sensitivity up) and clears fewer healthy scans (specificity down).

# %%
cm = confusion_matrix(oof_truth, (oof_probability >= 0.5).astype(np.int64))
(tn, fp), (fn, tp) = cm
print(f"pooled confusion matrix {cm.tolist()}: sensitivity {tp / (tp + fn):.3f}, specificity {tn / (tn + fp):.3f}")
for threshold in (0.3, 0.5, 0.7):
    s = binary_scores(oof_truth, oof_probability, threshold=threshold)
    print(f"threshold {threshold}: sensitivity {s['sensitivity']:.3f}, specificity {s['specificity']:.3f}, "
          f"accuracy {s['accuracy']:.3f}")

fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.4), gridspec_kw={"width_ratios": [1, 1.5]})
rates = cm / cm.sum(1, keepdims=True)
left.imshow(rates, cmap="Greys", vmin=0, vmax=1.6)
names = (("TN", "FP"), ("FN", "TP"))
for (i, j), count in np.ndenumerate(cm):
    left.text(j, i, f"{names[i][j]} {count}\n{rates[i, j]:.0%} of row", ha="center", va="center", fontsize=9)
left.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["healthy", "tumor"], yticklabels=["healthy", "tumor"],
         xlabel="predicted", ylabel="true", title=f"{len(rows)} out-of-fold predictions")
for tick, colour in zip(left.get_yticklabels(), (HEALTHY, TUMOR)):
    tick.set_color(colour)
left.grid(False)
bins = np.linspace(0, 1, 21)
right.hist(oof_probability[oof_truth == 0], bins, color=HEALTHY, alpha=0.6, label="healthy scans")
right.hist(oof_probability[oof_truth == 1], bins, color=TUMOR, alpha=0.6, label="tumor scans")
right.axvline(0.5, color="black", lw=1, ls="--", label="threshold 0.5")
right.set(xlabel="predicted tumor probability", ylabel="images", title=f"SmallCNN {IMAGE_SIZE}px, {SOURCE}")
right.legend()
fig.tight_layout()
save(fig, "05_confusion.png")

# %% [markdown]
# ## 4. ROC curve and ROC-AUC
#
# Each threshold gives one (1 - specificity, sensitivity) point; the **ROC curve** joins them all
# (`metrics.roc_curve`), from "everything healthy" at (0, 0) to "everything tumor" at (1, 1). Its area,
# **ROC-AUC** (`metrics.roc_auc`), does not depend on any threshold: it is the chance that a random
# tumor scan gets a higher score than a random healthy one (0.5 = guessing, 1 = perfect ranking). A
# brute-force count over all pairs agrees with the library's rank formula:

# %%
pos, neg = oof_probability[oof_truth == 1], oof_probability[oof_truth == 0]
pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
print(f"ROC-AUC: library {roc_auc(oof_truth, oof_probability):.4f}, share of correctly ordered "
      f"(tumor, healthy) pairs {pairs:.4f}")
fpr, tpr = roc_curve(oof_truth, oof_probability)
print(f"ROC curve: {len(fpr)} points; at sensitivity >= 0.9 the best specificity is {1 - fpr[tpr >= 0.9].min():.3f}")
curves = [(r["name"], [p["label"] for p in r["predictions"]], [p["probability"] for p in r["predictions"]])
          for r in (json.loads((WORKDIR / "cv" / f"fold{f + 1}" / "fold.json").read_text()) for f in range(FOLDS))]
plots.roc_figure(curves + [("pooled", oof_truth, oof_probability)], FIGURES / "05_roc.png")
print(f"figure: {FIGURES / '05_roc.png'}")

# %% [markdown]
# The per-round curves scatter around the pooled one: each is drawn from a third (quick) or a fifth of
# the images. Picking the threshold that looks best on these curves would be tuning on the test
# predictions; a threshold, like any hyperparameter, is chosen on validation images.
#
# ## 5. Bootstrap intervals, and how much one split moves
#
# How far could the pooled accuracy be from the truth? The **bootstrap** answers without a formula:
# draw the test images again with replacement, as many as there are, recompute the score, and repeat
# 2,000 times; the middle 95 % of the scores is the interval. `group_bootstrap(statistic, groups)` draws
# whole duplicate **groups**, not images: two copies of one scan are one piece of evidence, and
# resampling them separately would make the interval too narrow. It takes any `statistic(rows)`.
# Where there are duplicates (the real set) the group interval comes out wider than the image one;
# on the phantoms, one image per group, the two are the same draws:

# %%
correct = ((oof_probability >= 0.5) == oof_truth).astype(np.float64)
by_group = group_bootstrap(lambda rows: correct[rows].mean(), oof_groups)
by_image = group_bootstrap(lambda rows: correct[rows].mean(), np.arange(len(correct)))
auc_ci = group_bootstrap(lambda rows: roc_auc(oof_truth[rows], oof_probability[rows]), oof_groups, resamples=500)
print(f"pooled accuracy {correct.mean():.3f}: 95% interval {by_group[0]:.3f}-{by_group[1]:.3f} resampling groups, "
      f"{by_image[0]:.3f}-{by_image[1]:.3f} resampling images")
print(f"pooled ROC-AUC {roc_auc(oof_truth, oof_probability):.3f}: 95% interval {auc_ci[0]:.3f}-{auc_ci[1]:.3f}")

# %% [markdown]
# A second way to see the same noise: keep the out-of-fold predictions fixed (one model quality) and
# only change **which** images form a 27 % test part, with 300 seeds of the library's grouped split.
# The figure puts it all together: the single run's test accuracy per epoch and the paper's mean of
# it (left); the three ways of reporting, with their intervals (middle); and the spread of the same
# predictions' accuracy over 300 random test parts (right).

# %%
index_of = {path: k for k, path in enumerate(data.paths)}  # cross_validate read the same folder
image_of_row = np.array([index_of[row["path"]] for row in rows])
assert np.array_equal(is_tumor[image_of_row], oof_truth)
correct_by_image = np.zeros(len(data))
correct_by_image[image_of_row] = correct
split_scores = []
for seed in range(300):
    part = grouped_stratified_split(is_tumor, data.groups, test_fraction=0.27, val_fraction=0.15, seed=seed)["test"]
    split_scores.append(correct_by_image[part].mean())
split_scores = np.array(split_scores)
n_test = len(split["test"])
print(f"the same predictions on 300 random test parts of about {n_test} images: accuracy {split_scores.min():.3f} "
      f"to {split_scores.max():.3f}, middle 95% {np.percentile(split_scores, 2.5):.3f}-"
      f"{np.percentile(split_scores, 97.5):.3f}")

fig, (a, b, c) = plt.subplots(1, 3, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.1, 1, 1.1]})
epochs = np.arange(1, EPOCHS + 1)
a.plot(epochs, per_epoch_test, marker=".", color="#7f7f7f", label="test accuracy per epoch")
a.axhline(single["mean_test_accuracy_over_epochs"], color="black", ls="--", lw=1, label="their mean (Table 4)")
a.plot(single["best_epoch"], single["test_accuracy"], "o", color=TUMOR, label="best-validation epoch")
a.set(xlabel="epoch", ylabel="test accuracy", title=f"one split, {n_test} test images", ylim=(0, 1.05))
a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
a.legend(loc="lower right")
estimates = [("mean over\nepochs", single["mean_test_accuracy_over_epochs"], None),
             ("one split,\nbest-val", single["test_accuracy"], single_ci),
             (f"{FOLDS}-fold,\npooled", acc, acc_ci)]
for k, (name, value, ci) in enumerate(estimates):
    err = None if ci is None else [[value - ci[0]], [ci[1] - value]]
    b.errorbar(k, value, yerr=err, fmt="o", color="black" if ci is None else HEALTHY, capsize=4)
b.set(xticks=range(3), xticklabels=[e[0] for e in estimates], xlim=(-0.5, 2.5), ylim=(0, 1.05),
      ylabel="accuracy", title="95% group-bootstrap intervals")
c.hist(split_scores, bins=np.linspace(0, 1, 41), color=HEALTHY, alpha=0.7)
c.axvline(correct.mean(), color="black", lw=1, label=f"all {len(correct)} images: {correct.mean():.3f}")
half = 1.96 * np.sqrt(correct.mean() * (1 - correct.mean()) / n_test)
c.axvspan(correct.mean() - half, correct.mean() + half, color="#7f7f7f", alpha=0.15, label="+-1.96 sqrt(p(1-p)/n)")
c.set(xlabel="accuracy on the test part", ylabel="seeds", title="same predictions, 300 random splits")
c.legend(loc="upper left")
fig.tight_layout()
save(fig, "05_split_noise.png")

# %% [markdown]
# ## 6. Tuning without touching the test fold (nested selection)
#
# Hyperparameters (learning rate, weight decay, schedule, the epoch, a threshold) are choices, and a
# choice made by looking at test scores is part of the model. With 9 grid points, each measured with
# +-11 points of noise, the best one on the test images looks several points better than it is
# (exercise 3 measures how much). The cure is **nested** selection: in every round, every candidate
# trains on that round's training part and is scored on that round's validation part; the winner,
# chosen per round, is then tested once on the held-out fold. The losers are never tested at all.
# (Averaging each candidate's validation score over all rounds would also leak: round j's validation
# images are round i's test images.)
#
# This is `--tune` of the command; here we run the command itself, `jaxmri.evaluate.main` with the
# same arguments a shell would pass, on a 2-point learning-rate grid:

# %%
TUNE = "lr=3e-4,1e-3"
argv = ["classify", "--arch", "cnn", "--data", str(DATA), "--image-size", str(IMAGE_SIZE), "--epochs", str(EPOCHS),
        "--batch-size", "16", "--folds", "2" if QUICK else str(FOLDS), "--tune", TUNE, "--bootstrap", str(RESAMPLES),
        "--out", str(WORKDIR / "nested")]
print("python -m jaxmri.evaluate " + " ".join(argv))
status = evaluate_main(argv)
nested = json.loads((WORKDIR / "nested" / "cv.json").read_text())
for name, chosen in zip([r["name"] for r in nested["rounds"]], [r["chosen"] for r in nested["rounds"]]):
    record = json.loads((WORKDIR / "nested" / name / "fold.json").read_text())
    scores = ", ".join(f"{c['point']} val {c['val_score'][0]:.3f}" for c in record["candidates"])
    print(f"{name}: {scores} -> chose {chosen}, test accuracy {record['test']['accuracy']:.3f}")
print(f"exit status {status}; nested pooled accuracy {nested['pooled']['accuracy']:.3f} "
      f"({nested['pooled_95ci']['accuracy'][0]:.3f}-{nested['pooled_95ci']['accuracy'][1]:.3f})")

# %% [markdown]
# Each round can choose a different point: the selection is part of what is being evaluated, so the
# pooled figure measures "SmallCNN with its learning rate chosen on 15 % of the training images", not
# any single learning rate. README's nested run on the real data (`python -m jaxmri.evaluate classify
# --arch rescnn --image-size 128 --folds 5 --epochs 50 --tune schedule=constant,cosine
# label_smoothing=0,0.1`) chose a different point in almost every round and scored 0.704 (0.638-0.770),
# no better than the untuned recipe's 0.715: with about 31 validation images per round, a grid mostly
# chooses noise. Honest evaluation often says "we cannot tell these apart", and that is a result.
#
# ## Exercises
#
# 1. Write `rates(cm)` that returns `(sensitivity, specificity, balanced_accuracy)` of a confusion
#    matrix `[[tn, fp], [fn, tp]]` (rows = truth, tumor = class 1), and check it with
#    `from checks.lesson_05 import check_rates; check_rates(rates)`. For README's first SmallCNN row
#    (68 test images: 42 tumor, 26 healthy; `[[12, 14], [10, 32]]`) you should see 0.762, 0.462 and
#    0.612, the table's sensitivity and specificity; its accuracy 64.7 % hides that it clears fewer
#    than half of the healthy scans.
# 2. Make 68 "test images" of which 80 % (54) are classified correctly, and compute the 95 % interval
#    of the accuracy with `group_bootstrap` (each image its own group). What is its width `hi - lo`?
#    Then find the smallest test set whose interval is at most +-5 points at 80 % (the formula in
#    section 1 is enough). Check both with `from checks.lesson_05 import check_interval_width;
#    check_interval_width(width, n_needed)`. You should see a width of about 0.19 (+-9.5 points) and
#    roughly 250 images: the whole data set, which is what k-fold gives you.
# 3. Selection bias in numbers: simulate 9 candidates that are all exactly as good (true accuracy
#    0.65), each scored on the same-sized 68-image test part and on a 31-image validation part (draw
#    the numbers correct with `np.random.default_rng(...).binomial`). Over many trials, what test
#    accuracy is reported on average (a) when the best candidate is chosen on its test score, (b) when
#    it is chosen on its validation score and then tested? Check with
#    `from checks.lesson_05 import check_selection_bias; check_selection_bias(a, b)`. You should see
#    roughly 0.73 for (a), 8 points of accuracy bought with luck alone, and 0.65 for (b).
