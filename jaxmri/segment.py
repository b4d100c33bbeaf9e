"""Segmentation runs (paper Section 3): images + masks -> grouped split -> U-Net -> run directory.

Masks are read at each image's original size (``jaxmri.masks``), then cropped with the image's own
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

from jaxmri import plots
from jaxmri.batching import apply_in_batches, epoch_batches, gather, num_batches
from jaxmri.config import SegmentConfig, save_config
from jaxmri.crop import crop_resize
from jaxmri.data_source import load_dataset, split_or_explain, phantom_masks_dir
from jaxmri.dataset import DataError, ImageSet
from jaxmri.masks import load_masks
from jaxmri.metrics import mean_scores, segmentation_scores
from jaxmri.optim import make_optimizer
from jaxmri.rundir import make_run_dir, restore_checkpoint, save_checkpoint, write_json
from jaxmri.segment_steps import predict_step, train_step
from jaxmri.unet import UNet


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


def run(cfg: SegmentConfig, *, progress: bool = True) -> dict:
    """Train and evaluate the U-Net; returns the ``metrics.json`` payload."""
    if cfg.data is not None and cfg.masks is None:
        raise DataError("segment needs --masks (a COCO .json, a Labelbox export, or a folder of PNG masks) with --data.")
    out = make_run_dir(cfg.out, "segment", overwrite=cfg.overwrite)
    save_config(cfg, out / "config.json")
    t_start = time.time()

    data = load_dataset(cfg.data, out, seed=cfg.seed, image_size=cfg.image_size, channels=1,
                        skip_unreadable=cfg.skip_unreadable, progress=progress)
    print(data.summary())
    masks_source = cfg.masks if cfg.masks is not None else phantom_masks_dir(cfg.data, out)
    index, masks = aligned_masks(data, masks_source, cfg.image_size)
    key = jax.random.key(cfg.seed)
    key_init, key_data, key_neg = jax.random.split(key, 3)
    healthy = np.flatnonzero(data.labels == 0)
    if cfg.negatives:
        chosen = np.sort(np.asarray(jax.random.permutation(key_neg, healthy))[: cfg.negatives])
        print(f"adding {len(chosen)} healthy images with empty masks (--negatives)")
        index = np.concatenate([index, chosen])
        masks = np.concatenate([masks, np.zeros((len(chosen),) + masks.shape[1:], np.uint8)])
    images = data.images[index]
    has_tumor = (masks.reshape(len(masks), -1).max(1) > 0).astype(np.int32)
    split = split_or_explain(has_tumor, data.groups[index], cfg)
    write_json(out / "split.json", {
        part: [{"path": data.paths[index[i]], "group": int(data.groups[index[i]]), "tumor": int(has_tumor[i]),
                "box": data.boxes[index[i]], "size": data.sizes[index[i]]} for i in idx]
        for part, idx in split.items()
    })
    print(f"{len(index)} images with masks: " + ", ".join(f"{p} {len(i)}" for p, i in split.items()))

    model = UNet(1, 1, width=cfg.width, rngs=nnx.Rngs(params=key_init))
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, kind=cfg.optimizer)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"model: UNet width {cfg.width}, {n_params:,} parameters, loss {cfg.loss}")

    arrays = {"image": images, "mask": masks}
    history, best = [], None
    steps = num_batches(len(split["train"]), cfg.batch_size)
    for epoch in range(cfg.epochs):
        t0 = time.time()
        key_perm, key_aug = jax.random.split(jax.random.fold_in(key_data, epoch))
        total, count = 0.0, 0.0
        bar = tqdm(epoch_batches(split["train"], cfg.batch_size, key_perm), total=steps,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for step, (rows, weight) in enumerate(bar):
            result = train_step(model, optimizer, gather(arrays, rows, weight), jax.random.fold_in(key_aug, step),
                                loss=cfg.loss, max_angle=cfg.max_angle)
            total, count = total + float(result["loss_sum"]), count + float(result["count"])
            bar.set_postfix(loss=f"{total / count:.4f}")
        record = {"epoch": epoch + 1, "train_loss": total / count, "seconds": 0.0}
        for part in ("val", "test"):
            idx = split[part]
            if len(idx):
                pred = apply_in_batches(predict_step, model, images[idx], cfg.batch_size) > cfg.threshold
                scores = mean_scores(segmentation_scores(masks[idx], pred))
                record.update({f"{part}_{name}": value for name, value in scores.items()})
        record["seconds"] = time.time() - t0
        history.append(record)
        # Best = highest validation Dice (the test split never chooses); without validation, the last epoch.
        score = record.get("val_dice", float(epoch))
        if best is None or score > best[0]:
            best = (score, epoch + 1)
            save_checkpoint(out / "checkpoint", model)
        msg = (f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {record['train_loss']:.4f}  val dice "
               f"{record.get('val_dice', float('nan')):.3f}  test dice {record.get('test_dice', float('nan')):.3f}  "
               f"({record['seconds']:.1f}s)")
        tqdm.write(msg) if progress else print(msg)

    restore_checkpoint(out / "checkpoint", model)
    test = split["test"]
    probs = apply_in_batches(predict_step, model, images[test], cfg.batch_size)
    per_image = segmentation_scores(masks[test], probs > cfg.threshold)
    summary = mean_scores(per_image)
    metrics = {
        "dataset": str(data.root),
        "masks": str(masks_source),
        "width": cfg.width,
        "loss": cfg.loss,
        "split_sizes": {part: len(idx) for part, idx in split.items()},
        "epochs": history,
        "best_epoch": best[1],
        **summary,
        "per_image": [{"path": data.paths[index[i]], **{k: float(v[j]) for k, v in per_image.items()}}
                      for j, i in enumerate(test)],
        "wall_time_s": time.time() - t_start,
    }
    write_json(out / "metrics.json", metrics)
    plots.learning_curves(history, out / "learning_curves.png", keys=("val", "test"), metric="dice",
                          title=f"U-Net width {cfg.width}, {cfg.loss}")
    order = np.argsort(-has_tumor[test], kind="stable")
    plots.overlays(images[test][order] / 255.0, masks[test][order], (probs[order] > cfg.threshold).astype(np.float32),
                   out / "overlays.png", titles=[Path(data.paths[index[test[j]]]).name for j in order])
    print(f"best epoch {best[1]}: test Dice {summary['dice']:.4f}, IoU {summary['iou']:.4f}, pixel accuracy "
          f"{summary['pixel_accuracy']:.4f}, sensitivity {summary['sensitivity']:.4f}")
    print(f"results in {out}")
    return metrics
