# %% [markdown]
# # Lesson 8, worked solutions
#
# Run it like the lesson (`python lessons/solutions/08_beating_the_paper.py`); each exercise ends with its
# checker's `exercise K: ok` line. It runs the lesson's ablation again (same configs, same seed, so the
# same folds and the same numbers) with `cross_validate`, quietly.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402

import numpy as np  # noqa: E402

from checks.lesson_08 import check_fold_differences, check_paired_bootstrap, check_validation_noise  # noqa: E402
from jaxmri.config import ClassifyConfig  # noqa: E402
from jaxmri.evaluation.bootstrap import group_bootstrap  # noqa: E402
from jaxmri.evaluation.crossval import cross_validate  # noqa: E402

from lesson_setup import QUICK, lesson_data  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 128
EPOCHS = 8 if QUICK else 30
BATCH = 8 if QUICK else 16
FOLDS = 2 if QUICK else 5
RESAMPLES = 500 if QUICK else 2000
DATA, SOURCE, WORK = lesson_data("lesson08-solutions")
PAPER = ClassifyConfig(arch="cnn", data=str(DATA), image_size=IMAGE_SIZE, epochs=EPOCHS, batch_size=BATCH, seed=0)
RECIPES = {"SmallCNN (paper)": PAPER, "ResCNN": dataclasses.replace(PAPER, arch="rescnn")}
summaries = {}
for name, cfg in RECIPES.items():
    with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch lines are the lesson's to show
        summaries[name] = cross_validate(cfg, folds=FOLDS, resamples=RESAMPLES, out=Path(WORK.name) / cfg.arch,
                                         progress=False)
    print(f"{name}: pooled accuracy {summaries[name]['pooled']['accuracy']:.3f} ({SOURCE})")
paper, res = summaries["SmallCNN (paper)"], summaries["ResCNN"]


# %% [markdown]
# ## Exercise 1: paired differences across folds

# %%
def fold_differences(summary_a, summary_b, metric):
    a = {r["name"]: r[metric] for r in summary_a["rounds"]}
    b = {r["name"]: r[metric] for r in summary_b["rounds"]}
    return np.array([b[name] - a[name] for name in a])


diffs = fold_differences(paper, res, "accuracy")
standard_error = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs)))
print(f"ResCNN - SmallCNN per round {np.round(diffs, 3).tolist()}: mean {diffs.mean():+.3f}, "
      f"standard error {standard_error:.3f}")
print("With 2 rounds the standard error is itself estimated from two numbers (one degree of freedom): a "
      "t-interval would be mean +- 12.7 standard errors. It says little; pool the images or run more folds.")
check_fold_differences(diffs, standard_error, paper, res)

# %% [markdown]
# ## Exercise 2: a paired, group-resampled bootstrap of the pooled difference

# %%
rows_a = {r["path"]: r for r in paper["out_of_fold_predictions"]}
rows_b = {r["path"]: r for r in res["out_of_fold_predictions"]}
paths = sorted(rows_a)
correct_a = np.array([(rows_a[p]["probability"] >= 0.5) == bool(rows_a[p]["label"]) for p in paths], float)
correct_b = np.array([(rows_b[p]["probability"] >= 0.5) == bool(rows_b[p]["label"]) for p in paths], float)
groups = np.array([rows_a[p]["group"] for p in paths])
d = correct_b - correct_a
interval = group_bootstrap(lambda rows: float(d[rows].mean()), groups)
larger_than_noise = bool(interval[0] > 0 or interval[1] < 0)
print(f"paired difference {d.mean():+.3f}, 95% CI ({interval[0]:.3f}, {interval[1]:.3f}); "
      f"{int(np.sum(d != 0))} of {len(d)} images are scored differently by the two recipes")
halves = [(s["pooled_95ci"]["accuracy"][1] - s["pooled_95ci"]["accuracy"][0]) / 2 for s in (paper, res)]
unpaired = float(np.hypot(*halves))
agree = float(np.corrcoef(correct_a, correct_b)[0, 1]) if correct_a.std() and correct_b.std() else float("nan")
print(f"half-width: paired {(interval[1] - interval[0]) / 2:.3f}, from the two separate intervals as if "
      f"independent {unpaired:.3f}; correlation of the two recipes' per-image correctness "
      f"{agree:.2f}. Pairing removes the noise the recipes share, so it helps "
      "most when their mistakes are strongly correlated (the same hard images); here they barely are.")
check_paired_bootstrap(interval, larger_than_noise, paper, res)

# %% [markdown]
# ## Exercise 3: the noise of a validation score

# %%
n, p, rounds = 31, 0.8, 5
one_image = 1 / n
se_round = float(np.sqrt(p * (1 - p) / n))
se_mean = se_round / np.sqrt(rounds)
needed = int(np.ceil(p * (1 - p) / 0.025 ** 2))
print(f"one image {one_image:.3f}; standard error {se_round:.3f} per round, {se_mean:.3f} for the 5-round mean; "
      f"a 2.5-point difference is one standard error with about {needed} validation images per round")
check_validation_noise(one_image, se_round, se_mean)
