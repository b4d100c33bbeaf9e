import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

# %% [markdown]
# # Lesson 5, worked solutions
#
# Run it like the lesson (`python lessons/solutions/05_honest_evaluation.py`); each exercise ends with
# its checker's `exercise K: ok` line. None of the three needs a trained model: they are about the
# arithmetic of evaluation, done with the library's metrics and bootstrap. It writes no figures.

# %%
import numpy as np  # noqa: E402

from checks.lesson_05 import check_interval_width, check_rates, check_selection_bias  # noqa: E402
from jaxmri.evaluation.bootstrap import group_bootstrap  # noqa: E402
from jaxmri.evaluation.metrics import binary_scores  # noqa: E402

from lesson_setup import QUICK, lesson_data  # noqa: E402

DATA, SOURCE, WORK = lesson_data("lesson05-solutions")  # prints which data; the exercises do not read images
TRIALS = 20_000 if QUICK else 200_000


# %% [markdown]
# ## Exercise 1: sensitivity, specificity, balanced accuracy
#
# Rows are the truth: sensitivity divides the tumor row's diagonal by the tumor row, specificity the
# healthy row's by the healthy row.

# %%
def rates(cm):
    (tn, fp), (fn, tp) = np.asarray(cm, np.float64)
    sensitivity, specificity = tp / (tp + fn), tn / (tn + fp)
    return sensitivity, specificity, (sensitivity + specificity) / 2


readme = [[12, 14], [10, 32]]  # README's first SmallCNN row: 42 tumor and 26 healthy test images
labels = np.repeat([0, 0, 1, 1], np.ravel(readme))
probability = np.repeat([0.0, 1.0, 0.0, 1.0], np.ravel(readme))  # predictions giving that matrix
library = binary_scores(labels, probability)
print(f"README row {readme}: ours {np.round(rates(readme), 3).tolist()}; library sensitivity "
      f"{library['sensitivity']:.3f}, specificity {library['specificity']:.3f}, "
      f"balanced {library['balanced_accuracy']:.3f}, accuracy {library['accuracy']:.3f}")
check_rates(rates)

# %% [markdown]
# ## Exercise 2: how wide is the interval of 68 test images?
#
# 54 of 68 correct (79.4 %, the nearest to 80 %); every image its own group. The half-width
# 1.96 sqrt(p (1 - p) / n) falls to 0.05 when n = 1.96^2 p (1 - p) / 0.05^2.

# %%
correct = np.r_[np.ones(54), np.zeros(14)]
lo, hi = group_bootstrap(lambda rows: correct[rows].mean(), np.arange(68))
width = hi - lo
p = 0.8
n_needed = int(np.ceil(1.96 ** 2 * p * (1 - p) / 0.05 ** 2))
print(f"68 images at {correct.mean():.3f}: 95% interval {lo:.3f}-{hi:.3f}, width {width:.3f}; "
      f"formula +-{1.96 * np.sqrt(p * (1 - p) / 68):.3f}; +-5 points needs {n_needed} images")
check_interval_width(width, n_needed)

# %% [markdown]
# ## Exercise 3: selection bias
#
# Every trial draws 9 test scores and 9 validation scores of candidates that are all exactly as good.
# (a) reports the best test score; (b) reports the test score of the best validation score.

# %%
rng = np.random.default_rng(0)
test = rng.binomial(68, 0.65, (TRIALS, 9)) / 68
val = rng.binomial(31, 0.65, (TRIALS, 9)) / 31
chosen_on_test = float(test.max(1).mean())
chosen_on_val = float(test[np.arange(TRIALS), val.argmax(1)].mean())
print(f"{TRIALS} trials: best on test reports {chosen_on_test:.3f}, chosen on validation {chosen_on_val:.3f} "
      "(true accuracy 0.650)")
check_selection_bias(chosen_on_test, chosen_on_val)
print("With nine equally good candidates, the best of nine noisy test scores is the luckiest, not the best: "
      "about 8 points of accuracy appear from nothing. Chosen on validation, the test score stays unbiased; "
      "cross_validate goes further and never tests the candidates it did not choose.")
