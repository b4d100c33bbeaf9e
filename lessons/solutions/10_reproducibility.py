import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

# %% [markdown]
# # Lesson 10, worked solutions

# %%
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402

import jax  # noqa: E402

from jaxmri.config import ClassifyConfig  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.train import main  # noqa: E402
from jaxmri.training import rundir  # noqa: E402
from jaxmri.training.classify import Evaluator, build_model, fit, make_keys  # noqa: E402
from jaxmri.training.optim import make_optimizer  # noqa: E402

from checks.lesson_10 import check_bit_identical, check_resume_refused, check_step_key, first_difference  # noqa: E402
from lesson_setup import QUICK, lesson_data  # noqa: E402

# %% [markdown]
# ## Exercise 1: a step's key
#
# `make_keys(seed)` gives `(key_init, key_data)`; `fit` hands `train_epoch` the key
# `fold_in(key_data, epoch)`; `train_epoch` splits it into `(key_perm, key_aug)` and augments step `step`
# with `fold_in(key_aug, step)`.

# %%
def step_key(seed: int, epoch: int, step: int) -> jax.Array:
    _, key_data = make_keys(seed)
    _, key_aug = jax.random.split(jax.random.fold_in(key_data, epoch))
    return jax.random.fold_in(key_aug, step)


check_step_key(step_key)

# %% [markdown]
# ## Exercise 2: stop after 2 epochs, resume to 4, compare with 4 in one go
#
# `fit(..., run_dir=RUN)` saves the state after every epoch; `load_state` restores it into a freshly
# built model and optimizer (the frozen parts, here none, are rebuilt from the config), and returns the
# history and best-so-far that `fit(..., resume=...)` continues from. The keys need nothing: epoch 3's key
# is `fold_in(key_data, 2)` whatever happened before. A resumed optimizer with another learning rate
# takes different steps from epoch 3 on, and the checker names the first array that differs.

# %%
IMAGE_SIZE = 32 if QUICK else 64
CFG = ClassifyConfig(arch="cnn", image_size=IMAGE_SIZE, batch_size=8, epochs=4, seed=0)
DATA, SOURCE, WORK = lesson_data("solution10")
RUN = Path(WORK.name) / "runs"
data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
split = grouped_stratified_split(data.labels, data.groups, test_fraction=CFG.test_fraction,
                                 val_fraction=CFG.val_fraction, seed=CFG.seed)
arrays = {"image": data.images, "label": data.labels}


def fresh(cfg: ClassifyConfig, lr: float | None = None):
    """Model, optimizer, evaluators and key_data of a new run of ``cfg`` (optionally another lr)."""
    key_init, key_data = make_keys(cfg.seed)
    model, _ = build_model(cfg, len(data.class_names), key_init)
    optimizer = make_optimizer(model, lr=cfg.lr if lr is None else lr, weight_decay=cfg.weight_decay)
    evaluators = {part: Evaluator(model, data.images[split[part]], data.labels[split[part]], cfg.batch_size)
                  for part in ("val", "test")}
    return model, optimizer, evaluators, key_data


def train(cfg: ClassifyConfig, *, run_dir=None, resume_lr=None, resume=False):
    """``fit`` a fresh run of ``cfg``; with ``resume``, first load ``run_dir``'s saved state."""
    model, optimizer, evaluators, key_data = fresh(cfg, resume_lr)
    progress = rundir.load_state(run_dir, model, optimizer) if resume else None
    history, _ = fit(cfg, model, optimizer, arrays, split["train"], evaluators, key_data, progress=False,
                     run_dir=run_dir, resume=progress)
    return model, history


two = dataclasses.replace(CFG, epochs=2)
(RUN / "stopped").mkdir(parents=True)
train(two, run_dir=RUN / "stopped")
backup = RUN / "stopped-copy"  # the same saved state, for the second resume below
shutil.copytree(RUN / "stopped", backup)
resumed, history_resumed = train(CFG, run_dir=RUN / "stopped", resume=True)
whole, history_whole = train(CFG)
check_bit_identical(resumed, whole, history_a=history_resumed, history_b=history_whole)

other_lr, _ = train(CFG, run_dir=backup, resume=True, resume_lr=2e-3)
try:
    check_bit_identical(other_lr, whole)
except AssertionError as refused:
    print(f"resumed with lr 2e-3, as expected: {refused}")
else:
    raise SystemExit("a resume with another learning rate should not be bit-identical")
print(f"first difference: {first_difference(other_lr, whole)}")

# %% [markdown]
# ## Exercise 3: a finished run cannot be stretched
#
# The command refuses any flag that disagrees with the run's `config.json`, naming each one. Resuming a
# 2-epoch run "to 4 epochs" would not give the 4-epoch run you asked for: with `--schedule cosine` the
# learning rate of every step is computed from the total number of steps (`--epochs` times the batches
# per epoch), so epochs 1-2 of a 4-epoch run differ from the 2 epochs that were saved; and the 2-epoch
# run's best checkpoint and metrics are its own. Start a new run with `--out` instead.

# %%
cli_run = RUN / "cli"
base = ["classify", "--arch", "cnn", "--data", str(DATA), "--image-size", str(IMAGE_SIZE), "--batch-size", "8"]
with contextlib.redirect_stderr(io.StringIO()):  # the progress bars
    assert main([*base, "--epochs", "2", "--out", str(cli_run)]) == 0
captured = io.StringIO()
with contextlib.redirect_stderr(captured):
    status = main(["classify", "--resume", str(cli_run), "--epochs", "4"])
print(f"exit status {status}: {captured.getvalue().strip()}")
check_resume_refused(status, captured.getvalue(), saved_epochs=2, given_epochs=4)
