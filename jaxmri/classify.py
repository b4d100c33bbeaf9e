"""Classification runs (paper Section 2): data -> split -> model -> 50 epochs -> run directory.

The loop is plain Python around the two jitted steps in ``jaxmri.classify_steps``; all state is
explicit (model, optimizer, PRNG key, epoch number), so a run is a pure function of its config.
"""

import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxmri import plots
from jaxmri.augment import to_float
from jaxmri.batching import apply_in_batches, epoch_batches, gather, num_batches
from jaxmri.classify_steps import eval_step, train_step
from jaxmri.config import ClassifyConfig, save_config
from jaxmri.data_source import load_dataset, split_or_explain
from jaxmri.metrics import classification_report
from jaxmri.optim import make_optimizer
from jaxmri.rundir import make_run_dir, restore_checkpoint, save_checkpoint, save_split, write_json
from jaxmri.small_cnn import SmallCNN
from jaxmri.vgg19 import VGG19Classifier

# The paper's Table 4 (mean test accuracy over the 50 epochs).
PAPER_MEAN_TEST_ACCURACY = {"cnn": 0.6622, "vgg19": 0.7719}


def build_model(cfg: ClassifyConfig, num_classes: int, rngs: nnx.Rngs) -> tuple[nnx.Module, str]:
    """The classifier named by ``cfg.arch`` and a label for its weights ("scratch", "imagenet", "random-init")."""
    if cfg.arch == "cnn":
        return SmallCNN(num_classes, image_size=cfg.image_size, rngs=rngs), "scratch"
    if cfg.pretrained == "none":
        return VGG19Classifier(num_classes, rngs=rngs), "random-init"
    from jaxmri.weights import load_vgg19

    return load_vgg19(cfg.weights, num_classes=num_classes, rngs=rngs), "imagenet"


def check_weights_available(cfg: ClassifyConfig) -> None:
    """Fail before any data work when ImageNet weights are asked for but absent."""
    if cfg.arch == "vgg19" and cfg.pretrained == "imagenet" and not Path(cfg.weights).is_file():
        from jaxmri.weights import WeightsError

        raise WeightsError(
            f"ImageNet weights not found at {cfg.weights}: run `python -m jaxmri.weights download vgg19` "
            f"(or `python -m jaxmri.weights convert vgg19-dcbb9e9d.pth --out {cfg.weights}` with a file you "
            "downloaded), pass --weights PATH, or use --pretrained none for a random-init backbone."
        )


@nnx.jit(graph_updates=False)
def _head_logits(model: VGG19Classifier, features):
    return model.head(features)


@nnx.jit(graph_updates=False)
def _embed(model: VGG19Classifier, batch: dict):
    return model.embed(to_float(batch["image"]))


class _Evaluator:
    """Logits of a fixed image set, re-using frozen VGG19 features across epochs when that is exact."""

    def __init__(self, model, images: np.ndarray, batch_size: int):
        self.images, self.batch_size = images, batch_size
        self.features = None
        if isinstance(model, VGG19Classifier) and model.freeze_backbone and len(images):
            model.eval()
            self.features = apply_in_batches(_embed, model, images, batch_size)

    def logits(self, model) -> np.ndarray:
        model.eval()
        if self.features is not None:
            return np.asarray(_head_logits(model, self.features))
        return apply_in_batches(eval_step, model, self.images, self.batch_size)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) == labels)) if len(labels) else float("nan")


def _loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy, computed stably in NumPy."""
    if not len(labels):
        return float("nan")
    top = logits.max(-1)
    log_z = top + np.log(np.exp(logits - top[:, None]).sum(-1))
    return float(np.mean(log_z - logits[np.arange(len(labels)), labels]))


def run(cfg: ClassifyConfig, *, progress: bool = True) -> dict:
    """Train and evaluate one classifier; returns the ``metrics.json`` payload.

    Raises ``DataError`` / ``WeightsError`` / ``RunDirError`` with one-line user messages before any
    training starts.
    """
    check_weights_available(cfg)
    out = make_run_dir(cfg.out, f"classify-{cfg.arch}", overwrite=cfg.overwrite)
    save_config(cfg, out / "config.json")
    t_start = time.time()

    data = load_dataset(cfg.data, out, image_size=cfg.image_size, channels=3, skip_unreadable=cfg.skip_unreadable, progress=progress)
    print(data.summary())
    split = split_or_explain(data.labels, data.groups, cfg)
    save_split(out / "split.json", data.paths, data.labels, data.groups, split)
    for part, idx in split.items():
        counts = ", ".join(f"{name} {int(np.sum(data.labels[idx] == c))}" for c, name in enumerate(data.class_names))
        print(f"{part:>5}: {len(idx)} images ({counts})")

    key = jax.random.key(cfg.seed)
    key_init, key_data = jax.random.split(key)
    model, weights_label = build_model(cfg, len(data.class_names), nnx.Rngs(params=key_init, dropout=jax.random.fold_in(key_init, 1)))
    if weights_label == "random-init":
        print("VGG19 backbone: RANDOM INIT (--pretrained none), frozen; only the head trains. Not the paper's ImageNet model.")
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, kind=cfg.optimizer)
    n_trainable = sum(x.size for x in jax.tree.leaves(nnx.state(model, optimizer.wrt)))
    n_total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"model: {type(model).__name__} ({weights_label}), {n_total:,} parameters, {n_trainable:,} trainable")

    arrays = {"image": data.images, "label": data.labels}
    evaluators = {part: _Evaluator(model, data.images[split[part]], cfg.batch_size) for part in ("val", "test")}
    labels = {part: data.labels[split[part]] for part in ("val", "test")}

    history, best = [], None
    steps_per_epoch = num_batches(len(split["train"]), cfg.batch_size)
    for epoch in range(cfg.epochs):
        t0 = time.time()
        key_perm, key_aug = jax.random.split(jax.random.fold_in(key_data, epoch))
        model.train()
        sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        bar = tqdm(epoch_batches(split["train"], cfg.batch_size, key_perm), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step, (rows, weight) in enumerate(bar):
            result = train_step(model, optimizer, gather(arrays, rows, weight), jax.random.fold_in(key_aug, step),
                                max_angle=cfg.max_angle)
            for name in sums:
                sums[name] += float(result[name])
            bar.set_postfix(loss=f"{sums['loss_sum'] / sums['count']:.3f}", acc=f"{sums['correct'] / sums['count']:.3f}")
        logits = {part: ev.logits(model) for part, ev in evaluators.items()}
        record = {
            "epoch": epoch + 1,
            "train_loss": sums["loss_sum"] / sums["count"],
            "train_accuracy": sums["correct"] / sums["count"],
            "val_loss": _loss(logits["val"], labels["val"]),
            "val_accuracy": _accuracy(logits["val"], labels["val"]),
            "test_accuracy": _accuracy(logits["test"], labels["test"]),
            "seconds": time.time() - t0,
        }
        history.append(record)
        # Best = highest validation accuracy, ties to the lower validation loss; without a validation
        # part the last epoch is kept. The test split never chooses anything.
        score = (record["val_accuracy"], -record["val_loss"]) if len(labels["val"]) else (epoch, 0.0)
        if best is None or score > best[0]:
            best = (score, epoch + 1)
            save_checkpoint(out / "checkpoint", model)
        msg = (f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {record['train_loss']:.4f}  train {record['train_accuracy']:.3f}  "
               f"val {record['val_accuracy']:.3f}  test {record['test_accuracy']:.3f}  ({record['seconds']:.1f}s)")
        tqdm.write(msg) if progress else print(msg)

    restore_checkpoint(out / "checkpoint", model)
    test_logits = evaluators["test"].logits(model)
    report = classification_report(labels["test"], np.argmax(test_logits, -1))
    metrics = {
        "arch": cfg.arch,
        "weights": weights_label,
        "dataset": str(data.root),
        "class_names": list(data.class_names),
        "split_sizes": {part: len(idx) for part, idx in split.items()},
        "epochs": history,
        "best_epoch": best[1],
        "test_accuracy": report["accuracy"],
        "mean_test_accuracy_over_epochs": float(np.mean([r["test_accuracy"] for r in history])),
        "confusion_matrix": report["confusion_matrix"],
        "sensitivity": report["sensitivity"],
        "specificity": report["specificity"],
        "paper_mean_test_accuracy": PAPER_MEAN_TEST_ACCURACY[cfg.arch],
        "wall_time_s": time.time() - t_start,
    }
    write_json(out / "metrics.json", metrics)
    title = f"{type(model).__name__} ({weights_label})"
    plots.learning_curves(history, out / "learning_curves.png", title=title)
    plots.confusion_matrix_figure(report["confusion_matrix"], data.class_names, out / "confusion_matrix.png",
                                  title=f"test, best-val epoch {best[1]}")
    print(f"best epoch {best[1]}: test accuracy {report['accuracy']:.4f}, sensitivity {report['sensitivity']:.3f}, "
          f"specificity {report['specificity']:.3f}; mean test accuracy over epochs "
          f"{metrics['mean_test_accuracy_over_epochs']:.4f} (paper: {PAPER_MEAN_TEST_ACCURACY[cfg.arch]:.4f})")
    print(f"results in {out}")
    return metrics
