"""Classification (paper Section 2): the one epoch loop, its evaluation, and the whole run.

- ``make_keys`` / ``build_model``: a run's PRNG keys and its classifier, from the config's seed;
- ``train_epoch``: one shuffled, augmented pass over the training images with ``classify_steps.train_step``
  (inside ``winograd_cache``);
- ``Evaluator`` / ``evaluate``: loss and accuracy on a fixed image set (frozen VGG19 features cached);
- ``fit``: ``cfg.epochs`` of ``train_epoch`` + ``evaluate``, keeping the best-validation checkpoint;
- ``run``: data -> split -> ``train_on_split`` (model -> ``fit`` -> run directory), which is
  ``python -m jaxmri.train classify``; ``jaxmri.evaluate`` calls ``train_on_split`` once per fold.

The loop is plain Python around the jitted steps; all state is explicit (model, optimizer, PRNG key,
epoch number), so a run is a pure function of its config. The lessons call these same functions.
"""

import contextlib
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxmri.config import ClassifyConfig
from jaxmri.data.augment import to_float
from jaxmri.data.batching import apply_in_batches, epoch_batches, num_batches
from jaxmri.data.dataset import ImageSet
from jaxmri.data.source import load_dataset, split_or_explain
from jaxmri.errors import DataError, WeightsError
from jaxmri.evaluation import plots
from jaxmri.evaluation.metrics import classification_report
from jaxmri.models import ResCNN, SmallCNN, VGG19Classifier, count_params
from jaxmri.training.classify_steps import eval_step, train_step
from jaxmri.training.compile_clock import compile_seconds, epoch_time_note
from jaxmri.training.optim import make_optimizer
from jaxmri.training import stop
from jaxmri.training.hosts import check_replicas_agree
from jaxmri.training.parallel import data_parallel, shard_batch
from jaxmri.training.rundir import (load_state, restore_checkpoint, save_checkpoint, save_split, save_state, start_run,
                                    write_json)

# The paper's Table 4 (mean test accuracy over the 50 epochs).
PAPER_MEAN_TEST_ACCURACY = {"cnn": 0.6622, "vgg19": 0.7719}  # ResCNN is ours: nothing to compare in the paper


def make_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(key_init, key_data)``: ``key_init`` draws the initial weights, ``key_data`` every epoch's shuffle
    and augmentation (``train_epoch`` gets ``jax.random.fold_in(key_data, epoch)``)."""
    key_init, key_data = jax.random.split(jax.random.key(seed))
    return key_init, key_data


def build_model(cfg: ClassifyConfig, num_classes: int, key_init: jax.Array) -> tuple[nnx.Module, str]:
    """The classifier named by ``cfg.arch`` and a label for its weights ("scratch", "imagenet", "random-init")."""
    rngs = nnx.Rngs(params=key_init, dropout=jax.random.fold_in(key_init, 1))
    if cfg.arch == "cnn":
        return SmallCNN(num_classes, image_size=cfg.image_size, rngs=rngs), "scratch"
    if cfg.arch == "rescnn":
        return ResCNN(num_classes, rngs=rngs), "scratch"
    if cfg.pretrained == "none":
        return VGG19Classifier(num_classes, rngs=rngs), "random-init"
    from jaxmri.weights import load_vgg19

    return load_vgg19(cfg.weights, num_classes=num_classes, rngs=rngs), "imagenet"


def check_classes(data: ImageSet) -> None:
    """``DataError`` unless the data has at least two classes (a classifier needs something to tell apart)."""
    if len(data.class_names) < 2:
        raise DataError(f"{data.root}: found {len(data.class_names)} class folder(s) ({', '.join(data.class_names)}); "
                        "classification needs two class folders, e.g. yes/ and no/.")


def check_weights_available(cfg: ClassifyConfig) -> None:
    """Fail before any data work when ImageNet weights are asked for but absent."""
    if cfg.arch == "vgg19" and cfg.pretrained == "imagenet" and not Path(cfg.weights).is_file():
        raise WeightsError(
            f"ImageNet weights not found at {cfg.weights}: run `python -m jaxmri.weights download vgg19` "
            f"(or `python -m jaxmri.weights convert vgg19-dcbb9e9d.pth --out {cfg.weights}` with a file you "
            "downloaded), pass --weights PATH, or use --pretrained none for a random-init backbone."
        )


def winograd_cache(model: nnx.Module, optimizer: nnx.Optimizer | None = None):
    """For a VGG19, the Winograd kernels that ``optimizer`` does not train transformed once, on entry,
    instead of in every call (``VGG19Classifier.winograd_cache``); nothing for the other models.

    ``train_epoch`` runs its steps inside it; ``optimizer=None`` (``predict``: nothing trains) caches
    every Winograd kernel."""
    if isinstance(model, VGG19Classifier):
        return model.winograd_cache(nnx.Nothing if optimizer is None else optimizer.wrt)
    return contextlib.nullcontext()


def train_epoch(model: nnx.Module, optimizer: nnx.Optimizer, arrays: dict[str, np.ndarray], indices: np.ndarray,
                key: jax.Array, *, batch_size: int, max_angle: float, label_smoothing: float = 0.0,
                progress: bool = False, desc: str = "train", mesh=None) -> dict[str, float]:
    """One epoch: ``arrays`` (``"image"`` uint8 (N, S, S, 3), ``"label"`` int32 (N,)) rows ``indices``,
    shuffled and augmented with ``key``, in fixed-size padded batches.

    Returns ``{"train_loss", "train_accuracy"}``, exact means over the epoch's images.
    """
    key_perm, key_aug = jax.random.split(key)
    model.train()
    sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    bar = tqdm(epoch_batches(indices, batch_size, key_perm), total=num_batches(len(indices), batch_size),
               desc=desc, disable=not progress, leave=False)
    with winograd_cache(model, optimizer):
        for step, (rows, weight) in enumerate(bar):
            batch = shard_batch(mesh, arrays, rows, weight)  # split over the devices when there are several
            result = train_step(model, optimizer, batch, jax.random.fold_in(key_aug, step),
                                max_angle=max_angle, label_smoothing=label_smoothing)
            # A CPU-device sync point per step: the progress bar shows the running loss.
            for name in sums:
                sums[name] += float(result[name])
            stop.check()  # Ctrl-C: here, between steps
            bar.set_postfix(loss=f"{sums['loss_sum'] / sums['count']:.3f}",
                            acc=f"{sums['correct'] / sums['count']:.3f}")
    return {"train_loss": sums["loss_sum"] / sums["count"], "train_accuracy": sums["correct"] / sums["count"]}


@nnx.jit(graph_updates=False)
def _head_logits(model: VGG19Classifier, features):
    return model.head(features)


@nnx.jit(graph_updates=False)
def _embed(model: VGG19Classifier, batch: dict):
    return model.embed(to_float(batch["image"]))


class Evaluator:
    """Logits of a fixed image set, re-using frozen VGG19 features across epochs when that is exact.

    ``images`` uint8 (N, S, S, 3) and ``labels`` int32 (N,); ``logits(model)`` is float32 (N, classes).
    ``tta``: the mean of the logits of each image and of its mirror image (test-time flip averaging;
    the training augmentation flips too, so the model has seen both).
    """

    def __init__(self, model: nnx.Module, images: np.ndarray, labels: np.ndarray, batch_size: int, *,
                 tta: bool = False):
        self.labels, self.batch_size = labels, batch_size
        self.views = [images, np.ascontiguousarray(images[:, :, ::-1])] if tta else [images]
        self.features = None
        if isinstance(model, VGG19Classifier) and model.freeze_backbone and len(images):
            model.eval()
            self.features = [apply_in_batches(_embed, model, view, batch_size) for view in self.views]

    def logits(self, model: nnx.Module) -> np.ndarray:
        model.eval()
        if self.features is not None:
            outputs = [np.asarray(_head_logits(model, features)) for features in self.features]
        else:
            outputs = [apply_in_batches(eval_step, model, view, self.batch_size) for view in self.views]
        return outputs[0] if len(outputs) == 1 else np.mean(outputs, axis=0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities (N, C) from logits (N, C), computed stably in NumPy."""
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def tumor_class(class_names) -> int:
    """The label of the tumor class: the folder named ``yes`` (any case), else label 1."""
    lower = [name.lower() for name in class_names]
    return lower.index("yes") if "yes" in lower else 1


def evaluate(model: nnx.Module, evaluator: Evaluator) -> dict[str, float]:
    """``{"loss", "accuracy"}`` of ``model`` on the evaluator's images (NaN for an empty set)."""
    logits, labels = evaluator.logits(model), evaluator.labels
    if not len(labels):
        return {"loss": float("nan"), "accuracy": float("nan")}
    top = logits.max(-1)  # mean softmax cross-entropy, computed stably in NumPy
    log_z = top + np.log(np.exp(logits - top[:, None]).sum(-1))
    return {"loss": float(np.mean(log_z - logits[np.arange(len(labels)), labels])),
            "accuracy": float(np.mean(np.argmax(logits, -1) == labels))}


def fit(cfg: ClassifyConfig, model: nnx.Module, optimizer: nnx.Optimizer, arrays: dict[str, np.ndarray],
        train: np.ndarray, evaluators: dict[str, Evaluator], key_data: jax.Array, *,
        checkpoint_dir: Path | None = None, progress: bool = True, run_dir: Path | None = None,
        resume: dict | None = None, mesh=None) -> tuple[list[dict], int]:
    """``cfg.epochs`` epochs; returns the per-epoch records and the best epoch (1-based).

    Best = highest validation accuracy, ties to the lower validation loss; without validation images the
    last epoch. The test split never chooses anything. With ``checkpoint_dir`` the best epoch's model is
    saved there (``restore_checkpoint`` reads it back); ``model`` itself ends at the last epoch. With
    ``run_dir`` the whole training state is saved at the end of every epoch (``rundir.save_state``);
    ``resume`` (what ``rundir.load_state`` returned, model and optimizer already restored) continues
    after its last finished epoch, with the same keys, so the run ends bit-identical to one never stopped.
    """
    history = list(resume["history"]) if resume else []
    best = (tuple(resume["best"][0]), resume["best"][1]) if resume else None
    for epoch in range(len(history), cfg.epochs):
        t0, compile_start = time.time(), compile_seconds()
        record = {"epoch": epoch + 1, **train_epoch(
            model, optimizer, arrays, train, jax.random.fold_in(key_data, epoch), batch_size=cfg.batch_size,
            max_angle=cfg.max_angle, label_smoothing=cfg.label_smoothing, progress=progress,
            desc=f"epoch {epoch + 1}/{cfg.epochs}", mesh=mesh)}
        val, test = evaluate(model, evaluators["val"]), evaluate(model, evaluators["test"])
        record.update({"val_loss": val["loss"], "val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"],
                       "seconds": time.time() - t0})
        record["compile_seconds"] = compile_seconds() - compile_start
        history.append(record)
        score = (record["val_accuracy"], -record["val_loss"]) if len(evaluators["val"].labels) else (epoch, 0.0)
        if best is None or score > best[0]:
            best = (score, epoch + 1)
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, model)
        if run_dir is not None:
            save_state(run_dir, model, optimizer, {"history": history, "best": [list(best[0]), best[1]]})
        msg = (f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {record['train_loss']:.4f}  train {record['train_accuracy']:.3f}  "
               f"val {record['val_accuracy']:.3f}  test {record['test_accuracy']:.3f}  ({epoch_time_note(record)})")
        tqdm.write(msg) if progress else print(msg)
    return history, best[1]


def run(cfg: ClassifyConfig, *, progress: bool = True, resume: bool = False) -> dict:
    """Train and evaluate one classifier; returns the ``metrics.json`` payload.

    Raises ``DataError`` / ``WeightsError`` / ``RunDirError`` with one-line user messages before any
    training starts.
    """
    check_weights_available(cfg)
    out, finished = start_run(cfg, f"classify-{cfg.arch}", resume=resume)
    if finished is not None:
        return finished
    t_start = time.time()

    data = load_dataset(cfg.data, out, seed=cfg.seed, image_size=cfg.image_size, channels=3,
                        skip_unreadable=cfg.skip_unreadable, progress=progress)
    print(data.summary())
    check_classes(data)
    split = split_or_explain(data.labels, data.groups, cfg)
    return train_on_split(cfg, data, split, out, progress=progress, t_start=t_start, resume=resume)


def train_on_split(cfg: ClassifyConfig, data: ImageSet, split: dict[str, np.ndarray], out: Path, *,
                   progress: bool = True, t_start: float | None = None, resume: bool = False) -> dict:
    """Everything after the split, into run directory ``out``: model, ``fit``, the best-validation
    checkpoint's test scores, ``split.json``, ``metrics.json`` and figures. Returns the metrics.

    ``python -m jaxmri.train`` and each fold of ``python -m jaxmri.evaluate`` call this. An empty
    ``split["test"]`` is allowed (model selection runs that must not see the test images): the test
    figures are then NaN and no test image is ever predicted.
    """
    t_start = time.time() if t_start is None else t_start
    save_split(out / "split.json", data, split)
    for part, idx in split.items():
        counts = ", ".join(f"{name} {int(np.sum(data.labels[idx] == c))}" for c, name in enumerate(data.class_names))
        print(f"{part:>5}: {len(idx)} images ({counts})")

    key_init, key_data = make_keys(cfg.seed)
    model, weights_label = build_model(cfg, len(data.class_names), key_init)
    if weights_label == "random-init":
        print("VGG19 backbone: RANDOM INIT (--pretrained none), frozen; only the head trains. Not the paper's ImageNet model.")
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, kind=cfg.optimizer,
                               schedule=cfg.schedule, steps=cfg.epochs * num_batches(len(split["train"]), cfg.batch_size))
    print(f"model: {type(model).__name__} ({weights_label}), {count_params(model):,} parameters, "
          f"{count_params(model, optimizer.wrt):,} trainable")
    mesh = data_parallel(cfg.devices, cfg.batch_size, model, optimizer)

    evaluators = {part: Evaluator(model, data.images[split[part]], data.labels[split[part]], cfg.batch_size,
                                  tta=cfg.tta) for part in ("val", "test")}
    history, best_epoch = fit(cfg, model, optimizer, {"image": data.images, "label": data.labels}, split["train"],
                              evaluators, key_data, checkpoint_dir=out / "checkpoint", progress=progress, run_dir=out,
                              resume=load_state(out, model, optimizer) if resume else None, mesh=mesh)
    check_replicas_agree(nnx.state(model))  # several processes: every copy of the final model is the same

    restore_checkpoint(out / "checkpoint", model)
    test_logits = (evaluators["test"].logits(model) if len(split["test"])
                   else np.zeros((0, len(data.class_names)), np.float32))
    report = classification_report(evaluators["test"].labels, np.argmax(test_logits, -1))
    best = history[best_epoch - 1]
    metrics = {
        "arch": cfg.arch,
        "weights": weights_label,
        "dataset": str(data.root),
        "class_names": list(data.class_names),
        "split_sizes": {part: len(idx) for part, idx in split.items()},
        "epochs": history,
        "best_epoch": best_epoch,
        "best_val_accuracy": best["val_accuracy"],
        "best_val_loss": best["val_loss"],
        "test_accuracy": report["accuracy"],
        "mean_test_accuracy_over_epochs": float(np.mean([r["test_accuracy"] for r in history])),
        "confusion_matrix": report["confusion_matrix"],
        "sensitivity": report["sensitivity"],
        "specificity": report["specificity"],
        "paper_mean_test_accuracy": PAPER_MEAN_TEST_ACCURACY.get(cfg.arch),
        # The best-validation model's probabilities per test image, so any later tool can pool them.
        "test_predictions": [{"path": data.paths[i], "label": int(data.labels[i]), "probabilities": p}
                             for i, p in zip(split["test"], softmax(test_logits).tolist())],
        "wall_time_s": time.time() - t_start,
    }
    write_json(out / "metrics.json", metrics)
    title = f"{type(model).__name__} ({weights_label})"
    plots.learning_curves(history, out / "learning_curves.png", title=title)
    if len(split["test"]):
        plots.confusion_matrix_figure(report["confusion_matrix"], data.class_names, out / "confusion_matrix.png",
                                      title=f"test, best-val epoch {best_epoch}")
    print(f"best epoch {best_epoch}: test accuracy {report['accuracy']:.4f}, sensitivity {report['sensitivity']:.3f}, "
          f"specificity {report['specificity']:.3f}; mean test accuracy over epochs "
          f"{metrics['mean_test_accuracy_over_epochs']:.4f}" + (f" (paper: {PAPER_MEAN_TEST_ACCURACY[cfg.arch]:.4f})"
                                                                if cfg.arch in PAPER_MEAN_TEST_ACCURACY else ""))
    print(f"results in {out}")
    return metrics
