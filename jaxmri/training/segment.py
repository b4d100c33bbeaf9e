"""Segmentation (paper Section 3): masks aligned with their images, the one epoch loop, and the run.

- ``aligned_masks`` / ``training_set``: the annotated images' masks, cropped like their images, plus
  ``--negatives`` healthy images with empty masks;
- ``make_keys`` / ``build_model``: a run's PRNG keys and its U-Net;
- ``train_epoch``, ``evaluate`` and ``fit``: the epoch loop, Dice on a fixed set, best-validation Dice;
- ``run``: data -> masks -> split -> U-Net -> ``fit`` -> run directory (``python -m jaxmri.train segment``).

Masks are read at each image's original size (``jaxmri.data.masks``), then cropped with the image's own
brain box and resized with nearest-neighbour interpolation, so image and mask stay aligned and the
mask stays exactly binary. The crop boxes and original sizes are kept in ``split.json`` so predictions
can be mapped back to the input image.
"""

import time
from pathlib import Path

import cv2
import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxmri.config import SegmentConfig
from jaxmri.data.batching import apply_in_batches, epoch_batches, num_batches
from jaxmri.data.crop import crop_resize
from jaxmri.data.dataset import ImageSet
from jaxmri.data.masks import load_masks
from jaxmri.data.source import load_dataset, phantom_masks_dir, split_or_explain
from jaxmri.data.split import grouped_subset
from jaxmri.errors import DataError
from jaxmri.evaluation import plots
from jaxmri.evaluation.metrics import mean_scores, segmentation_scores
from jaxmri.models import UNet, count_params
from jaxmri.training.compile_clock import compile_seconds, epoch_time_note
from jaxmri.training.optim import make_optimizer
from jaxmri.training import stop
from jaxmri.training.hosts import check_replicas_agree
from jaxmri.training.parallel import data_parallel, shard_batch
from jaxmri.training.rundir import (load_state, restore_checkpoint, save_checkpoint, save_split, save_state, start_run,
                                    write_json)
from jaxmri.training.segment_steps import predict_step, train_step


def aligned_masks(data: ImageSet, masks_source, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``data`` of the annotated images and their masks, uint8 (M, S, S, 1) in {0, 1}.

    Masks are matched to images by lower-case file stem and transformed with each image's crop box.
    """
    stems = [Path(p).stem.lower() for p in data.paths]
    sizes, first = {}, {}
    for i, (stem, size) in enumerate(zip(stems, data.sizes)):
        sizes.setdefault(stem, (int(size[0]), int(size[1])))
        first.setdefault(stem, i)
    masks = load_masks(masks_source, sizes)
    for i, stem in enumerate(stems):
        # Two images with one stem (Y92.jpg / Y92.png in the real set) are fine until a mask names that stem.
        if stem in masks and first[stem] != i:
            raise DataError(f"{masks_source}: the mask for {stem!r} matches both {data.paths[first[stem]]} and "
                            f"{data.paths[i]}; rename one image so each mask names exactly one.")
    if not masks:
        raise DataError(f"{masks_source}: no annotation matches an image in {data.root}; check the file names.")
    index = [i for i, stem in enumerate(stems) if stem in masks and first[stem] == i]
    out = np.stack([crop_resize(masks[stems[i]], tuple(data.boxes[i]), image_size, cv2.INTER_NEAREST) for i in index])
    return np.asarray(index), (out > 0).astype(np.uint8)[..., None]


def training_set(data: ImageSet, masks_source, image_size: int, negatives: int,
                 key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """``aligned_masks`` plus ``negatives`` healthy (label 0) images with all-zero masks, drawn with ``key``.

    Returns indices into ``data`` and uint8 (M, S, S, 1) masks, annotated images first.
    """
    index, masks = aligned_masks(data, masks_source, image_size)
    if negatives:
        healthy = np.flatnonzero(data.labels == 0)
        chosen = np.sort(np.asarray(jax.random.permutation(key, healthy))[:negatives])
        print(f"adding {len(chosen)} healthy images with empty masks (--negatives)")
        index = np.concatenate([index, chosen])
        masks = np.concatenate([masks, np.zeros((len(chosen),) + masks.shape[1:], np.uint8)])
    return index, masks


def make_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(key_init, key_data, key_negatives)``: initial weights; every epoch's shuffle and augmentation
    (``train_epoch`` gets ``jax.random.fold_in(key_data, epoch)``); which healthy images are added."""
    key_init, key_data, key_neg = jax.random.split(jax.random.key(seed), 3)
    return key_init, key_data, key_neg


def build_model(cfg: SegmentConfig, key_init: jax.Array) -> UNet:
    """The U-Net of ``cfg.width`` base filters (gray in, one tumor logit per pixel out)."""
    return UNet(1, 1, width=cfg.width, rngs=nnx.Rngs(params=key_init))


def train_epoch(model: nnx.Module, optimizer: nnx.Optimizer, arrays: dict[str, np.ndarray], indices: np.ndarray,
                key: jax.Array, *, batch_size: int, loss: str, max_angle: float, progress: bool = False,
                desc: str = "train", mesh=None) -> dict[str, float]:
    """One epoch over ``arrays`` (``"image"``, ``"mask"``: uint8 (N, S, S, 1)) rows ``indices``, shuffled
    and augmented with ``key`` (the same flip and rotation for image and mask). Returns ``{"train_loss"}``."""
    key_perm, key_aug = jax.random.split(key)
    total, count = 0.0, 0.0
    bar = tqdm(epoch_batches(indices, batch_size, key_perm), total=num_batches(len(indices), batch_size),
               desc=desc, disable=not progress, leave=False)
    for step, (rows, weight) in enumerate(bar):
        batch = shard_batch(mesh, arrays, rows, weight)  # split over the devices when there are several
        result = train_step(model, optimizer, batch, jax.random.fold_in(key_aug, step),
                            loss=loss, max_angle=max_angle)
        # A CPU-device sync point per step: the progress bar shows the running loss.
        total, count = total + float(result["loss_sum"]), count + float(result["count"])
        stop.check()  # Ctrl-C: here, between steps
        bar.set_postfix(loss=f"{total / count:.4f}")
    return {"train_loss": total / count}


def evaluate(model: nnx.Module, images: np.ndarray, masks: np.ndarray, *, batch_size: int,
             threshold: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-image scores (``jaxmri.evaluation.metrics.segmentation_scores``) of the thresholded
    prediction, and the tumor probabilities float32 (N, S, S, 1) themselves."""
    probs = apply_in_batches(predict_step, model, images, batch_size)
    return segmentation_scores(masks, probs > threshold), probs


def fit(cfg: SegmentConfig, model: nnx.Module, optimizer: nnx.Optimizer, arrays: dict[str, np.ndarray],
        split: dict[str, np.ndarray], key_data: jax.Array, *, checkpoint_dir: Path | None = None,
        progress: bool = True, run_dir: Path | None = None, resume: dict | None = None,
        mesh=None) -> tuple[list[dict], int]:
    """``cfg.epochs`` epochs; returns the per-epoch records (mean val / test scores) and the best epoch.

    Best = highest validation Dice (the test split never chooses); without validation, the last epoch.
    With ``checkpoint_dir`` the best epoch's model is saved there; ``model`` ends at the last epoch.
    ``run_dir`` / ``resume``: the per-epoch training state, as in ``classify.fit``.
    """
    history = list(resume["history"]) if resume else []
    best = tuple(resume["best"]) if resume else None
    for epoch in range(len(history), cfg.epochs):
        t0, compile_start = time.time(), compile_seconds()
        record = {"epoch": epoch + 1, **train_epoch(
            model, optimizer, arrays, split["train"], jax.random.fold_in(key_data, epoch), batch_size=cfg.batch_size,
            loss=cfg.loss, max_angle=cfg.max_angle, progress=progress, desc=f"epoch {epoch + 1}/{cfg.epochs}",
            mesh=mesh),
            "seconds": 0.0}
        for part in ("val", "test"):
            idx = split[part]
            if len(idx):
                scores, _ = evaluate(model, arrays["image"][idx], arrays["mask"][idx], batch_size=cfg.batch_size,
                                     threshold=cfg.threshold)
                record.update({f"{part}_{name}": value for name, value in mean_scores(scores).items()})
        record["seconds"] = time.time() - t0
        record["compile_seconds"] = compile_seconds() - compile_start
        history.append(record)
        score = record.get("val_dice", float(epoch))
        if best is None or score > best[0]:
            best = (score, epoch + 1)
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, model)
        if run_dir is not None:
            save_state(run_dir, model, optimizer, {"history": history, "best": list(best)})
        msg = (f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {record['train_loss']:.4f}  val dice "
               f"{record.get('val_dice', float('nan')):.3f}  test dice {record.get('test_dice', float('nan')):.3f}  "
               f"({epoch_time_note(record)})")
        tqdm.write(msg) if progress else print(msg)
    return history, best[1]


def check_sources(cfg: SegmentConfig) -> None:
    """``DataError`` unless ``--data`` and ``--masks`` come together (or neither: the phantom and its masks)."""
    if cfg.data is not None and cfg.masks is None:
        raise DataError("segment needs --masks (a COCO .json, a Labelbox export, or a folder of PNG masks) with --data.")
    if cfg.data is None and cfg.masks is not None:
        raise DataError(f"--masks {cfg.masks} needs --data, the folder of the images they annotate (without --data "
                        "the generated phantom set and its own masks are used).")


def run(cfg: SegmentConfig, *, progress: bool = True, resume: bool = False) -> dict:
    """Train and evaluate the U-Net; returns the ``metrics.json`` payload."""
    check_sources(cfg)
    out, finished = start_run(cfg, "segment", resume=resume)
    if finished is not None:
        return finished
    t_start = time.time()

    data = load_dataset(cfg.data, out, seed=cfg.seed, image_size=cfg.image_size, channels=1,
                        skip_unreadable=cfg.skip_unreadable, progress=progress)
    print(data.summary())
    masks_source = cfg.masks if cfg.masks is not None else phantom_masks_dir(cfg.data, out)
    key_init, key_data, key_neg = make_keys(cfg.seed)
    index, masks = training_set(data, masks_source, cfg.image_size, cfg.negatives, key_neg)
    has_tumor = mask_labels(masks)
    split = split_or_explain(has_tumor, data.groups[index], cfg)
    return train_on_split(cfg, data, index, masks, split, out, masks_source=masks_source, progress=progress,
                          t_start=t_start, resume=resume)


def mask_labels(masks: np.ndarray) -> np.ndarray:
    """1 for a mask with any tumor pixel, else 0: what the segmentation split is stratified on."""
    return (masks.reshape(len(masks), -1).max(1) > 0).astype(np.int32)


def train_on_split(cfg: SegmentConfig, data: ImageSet, index: np.ndarray, masks: np.ndarray,
                   split: dict[str, np.ndarray], out: Path, *, masks_source, progress: bool = True,
                   t_start: float | None = None, resume: bool = False) -> dict:
    """Everything after the split, into run directory ``out``: U-Net, ``fit``, the best-validation
    checkpoint's test scores, ``split.json``, ``metrics.json`` and figures. Returns the metrics.

    ``index`` (M,) rows of ``data`` with ``masks`` uint8 (M, S, S, 1) (``training_set``); ``split`` holds
    positions into ``index``. ``python -m jaxmri.train segment`` and each fold of ``python -m
    jaxmri.evaluate segment`` call this; an empty ``split["test"]`` is allowed (NaN test figures).
    """
    t_start = time.time() if t_start is None else t_start
    key_init, key_data, _ = make_keys(cfg.seed)
    images = data.images[index]
    has_tumor = mask_labels(masks)
    if cfg.train_fraction < 1.0:
        kept = grouped_subset(split["train"], has_tumor, data.groups[index], cfg.train_fraction, seed=cfg.seed)
        print(f"--train-fraction {cfg.train_fraction:g}: training on {len(kept)} of the {len(split['train'])} "
              "training images (whole duplicate groups, per class)")
        split = {**split, "train": kept}
    save_split(out / "split.json", data, split, index=index, labels=has_tumor, class_names=("empty mask", "tumor"))
    print(f"{len(index)} images with masks: " + ", ".join(f"{p} {len(i)}" for p, i in split.items()))
    model = build_model(cfg, key_init)
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, kind=cfg.optimizer,
                               schedule=cfg.schedule, steps=cfg.epochs * num_batches(len(split["train"]), cfg.batch_size))
    print(f"model: UNet width {cfg.width}, {count_params(model):,} parameters, loss {cfg.loss}")
    mesh = data_parallel(cfg.devices, cfg.batch_size, model, optimizer)

    history, best_epoch = fit(cfg, model, optimizer, {"image": images, "mask": masks}, split, key_data,
                              checkpoint_dir=out / "checkpoint", progress=progress, run_dir=out,
                              resume=load_state(out, model, optimizer) if resume else None, mesh=mesh)
    check_replicas_agree(nnx.state(model))  # several processes: every copy of the final model is the same

    restore_checkpoint(out / "checkpoint", model)
    test = split["test"]
    if len(test):
        per_image, probs = evaluate(model, images[test], masks[test], batch_size=cfg.batch_size,
                                    threshold=cfg.threshold)
    else:  # a model-selection run: the test images are never predicted
        per_image, probs = {name: np.zeros(0) for name in ("dice", "iou", "pixel_accuracy", "sensitivity")}, None
    summary = mean_scores(per_image)
    metrics = {
        "dataset": str(data.root),
        "masks": str(masks_source),
        "width": cfg.width,
        "loss": cfg.loss,
        "split_sizes": {part: len(idx) for part, idx in split.items()},
        "epochs": history,
        "best_epoch": best_epoch,
        "best_val_dice": history[best_epoch - 1].get("val_dice", float("nan")),
        **summary,
        "per_image": [{"path": data.paths[index[i]], **{k: float(v[j]) for k, v in per_image.items()}}
                      for j, i in enumerate(test)],
        "wall_time_s": time.time() - t_start,
    }
    write_json(out / "metrics.json", metrics)
    plots.learning_curves(history, out / "learning_curves.png", keys=("val", "test"), metric="dice",
                          title=f"U-Net width {cfg.width}, {cfg.loss}")
    order = np.argsort(-has_tumor[test], kind="stable")
    if len(test):
        plots.overlays(images[test][order] / 255.0, masks[test][order],
                       (probs[order] > cfg.threshold).astype(np.float32),
                       out / "overlays.png", titles=[Path(data.paths[index[test[j]]]).name for j in order])
    print(f"best epoch {best_epoch}: test Dice {summary['dice']:.4f}, IoU {summary['iou']:.4f}, pixel accuracy "
          f"{summary['pixel_accuracy']:.4f}, sensitivity {summary['sensitivity']:.4f}")
    print(f"results in {out}")
    return metrics
