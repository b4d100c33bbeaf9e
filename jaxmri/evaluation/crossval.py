"""Grouped, stratified k-fold cross-validation of a training config (``python -m jaxmri.evaluate``).

One split of 68 test images gives a 95% interval of about +-11 points; cross-validation tests every
image once. The protocol, the same for both tasks:

1. The images (classification) or annotated images (segmentation) are cut into ``folds`` grouped,
   stratified folds (``jaxmri.evaluation.folds``); ``repeats`` > 1 repeats that with split seeds
   ``seed, seed + 1, ...``.
2. In round i the held-out fold i is the test part; a validation part is carved from the other folds
   only; the rest trains (``fold_split``).
3. Every candidate config (the given one, or each point of ``grid``) is trained on that round's
   training part with **no test images at all**, into its own normal run directory (``predict`` works
   on it); its best epoch is chosen on validation.
4. The candidate with the best validation score (accuracy, ties to the lower validation loss; or Dice)
   is chosen *per round*, from that round's validation part alone: this is nested model selection,
   so the test fold of round i never influenced anything chosen for round i.
5. Only then is the test fold predicted, once, with the chosen checkpoint.

Every round writes ``fold.json`` when it is complete; rerunning the same command skips those rounds, so
a crash loses at most the round in progress. ``cv.json`` / ``cv.md`` hold the per-round and mean +- sd
figures, the pooled out-of-fold predictions (one per image and repeat), and bootstrap 95% intervals
that resample whole duplicate groups.
"""

import dataclasses
import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np

from jaxmri.config import ClassifyConfig, save_config
from jaxmri.data.source import load_dataset
from jaxmri.errors import DataError
from jaxmri.evaluation import plots
from jaxmri.evaluation.bootstrap import RESAMPLES, group_bootstrap
from jaxmri.evaluation.folds import fold_split, grouped_stratified_folds
from jaxmri.evaluation.metrics import binary_scores, mean_scores
from jaxmri.training.rundir import has_state, open_resumable, write_json

CLASSIFY_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "roc_auc")
SEGMENT_METRICS = ("dice", "iou", "pixel_accuracy", "sensitivity")


def parse_grid(items: list[str] | None, cls) -> list[dict]:
    """``["lr=1e-4,3e-4", "weight_decay=0,4e-4"]`` -> the 4 points of the grid, as config overrides.

    Values are parsed with the type of the config field's default. Raises ``ValueError`` (one line
    naming the item) for an unknown field, a field that cannot be tuned, or a bad value.
    """
    if not items:
        return [{}]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    axes = []
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values:
            raise ValueError(f"--tune {item!r}: write FIELD=V1,V2,... (e.g. lr=1e-4,3e-4,1e-3).")
        if name not in fields or name in ("data", "masks", "out", "overwrite", "seed", "test_fraction",
                                           "val_fraction", "skip_unreadable", "weights"):
            raise ValueError(f"--tune {item!r}: {name!r} is not a tunable field of {cls.__name__}.")
        kind = type(fields[name].default)
        parsed = []
        for raw in values.split(","):
            try:
                if kind is bool and raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError(raw)
                parsed.append(kind(raw) if kind is not bool else raw.lower() in ("1", "true", "yes"))
            except ValueError:
                raise ValueError(f"--tune {item!r}: {raw!r} is not a valid {kind.__name__} for {name}.") from None
        axes.append([(name, v) for v in parsed])
    return [dict(point) for point in itertools.product(*axes)]


def _comparable(cfg) -> dict:
    values = dataclasses.asdict(cfg)
    for name in ("out", "overwrite"):
        values.pop(name)
    return values


class _Task:
    """What differs between the two tasks: the items folded, how to train one, how to test a checkpoint."""

    def __init__(self, cfg, out: Path, progress: bool):
        from jaxmri.training import classify, segment

        self.cfg, self.progress = cfg, progress
        self.classify = isinstance(cfg, ClassifyConfig)
        if self.classify:
            classify.check_weights_available(cfg)
        else:
            segment.check_sources(cfg)
        self.data = load_dataset(cfg.data, out, seed=cfg.seed, image_size=cfg.image_size,
                                 channels=3 if self.classify else 1, skip_unreadable=cfg.skip_unreadable,
                                 progress=progress)
        print(self.data.summary())
        if self.classify:
            classify.check_classes(self.data)
            self.index = np.arange(len(self.data))
            self.labels = self.data.labels
            self.module = classify
        else:
            masks_source = cfg.masks
            if masks_source is None:
                from jaxmri.data.source import phantom_masks_dir

                masks_source = phantom_masks_dir(cfg.data, out)
            _, _, key_neg = segment.make_keys(cfg.seed)
            self.index, self.masks = segment.training_set(self.data, masks_source, cfg.image_size, cfg.negatives,
                                                          key_neg)
            self.masks_source = masks_source
            self.labels = segment.mask_labels(self.masks)
            self.module = segment
        self.groups = self.data.groups[self.index]
        self.paths = [self.data.paths[i] for i in self.index]

    def train(self, cfg, split: dict[str, np.ndarray], run_dir: Path) -> dict:
        """Train one candidate into ``run_dir``; a candidate that stopped part-way continues from its last
        finished epoch (``rundir.save_state``), bit-identical to one never stopped."""
        save_config(cfg, run_dir / "config.json")
        resume = has_state(run_dir)
        if self.classify:
            return self.module.train_on_split(cfg, self.data, split, run_dir, progress=self.progress, resume=resume)
        return self.module.train_on_split(cfg, self.data, self.index, self.masks, split, run_dir,
                                          masks_source=self.masks_source, progress=self.progress, resume=resume)

    def val_score(self, metrics: dict) -> tuple:
        if self.classify:
            return metrics["best_val_accuracy"], -metrics["best_val_loss"]
        return (metrics["best_val_dice"],)

    def test(self, run_dir: Path, test: np.ndarray) -> list[dict]:
        """One row per test item with the chosen checkpoint's output (the only look at the test fold)."""
        from jaxmri.inference.load import load_run

        model = load_run(run_dir).model
        rows = [{"path": self.paths[i], "label": int(self.labels[i]), "group": int(self.groups[i])} for i in test]
        if self.classify:
            evaluator = self.module.Evaluator(model, self.data.images[test], self.labels[test], self.cfg.batch_size,
                                              tta=self.cfg.tta)
            probs = self.module.softmax(evaluator.logits(model))
            tumor = self.module.tumor_class(self.data.class_names)
            for row, p in zip(rows, probs):
                row["probability"] = float(p[tumor])
                row["label"] = int(row["label"] == tumor)
        else:
            scores, _ = self.module.evaluate(model, self.data.images[self.index[test]], self.masks[test],
                                             batch_size=self.cfg.batch_size, threshold=self.cfg.threshold)
            for j, row in enumerate(rows):
                row.update({name: float(values[j]) for name, values in scores.items()})
        return rows

    def scores(self, rows: list[dict]) -> dict[str, float]:
        if self.classify:
            return binary_scores([r["label"] for r in rows], [r["probability"] for r in rows])
        return mean_scores({name: np.array([r[name] for r in rows]) for name in SEGMENT_METRICS})


def cross_validate(cfg, *, folds: int = 5, repeats: int = 1, grid: list[dict] | None = None,
                   resamples: int = RESAMPLES, out, overwrite: bool = False, progress: bool = True) -> dict:
    """Run the protocol in the module docstring; returns the ``cv.json`` payload."""
    grid = grid or [{}]
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}.")
    settings = {"task": "classify" if isinstance(cfg, ClassifyConfig) else "segment", "config": _comparable(cfg),
                "folds": folds, "repeats": repeats, "grid": grid, "resamples": resamples}
    out, resuming = open_resumable(Path(out), settings, record="cv_config.json", kind="evaluation", overwrite=overwrite)
    if resuming:
        print(f"resuming the evaluation in {out}: finished rounds are kept")
    task = _Task(cfg, out, progress)
    plans = []
    for repeat in range(repeats):
        try:
            fold_sets = grouped_stratified_folds(task.labels, task.groups, folds, seed=cfg.seed + repeat)
            plans += [(repeat, f, fold_split(task.labels, task.groups, fold_sets, f, val_fraction=cfg.val_fraction,
                                             seed=cfg.seed + repeat)) for f in range(folds)]
        except ValueError as err:
            raise DataError(f"cannot make {folds} folds: {err}") from None

    t_start, done_now, results = time.time(), 0, []
    for n, (repeat, fold, split) in enumerate(plans):
        name = f"fold{fold + 1}" if repeats == 1 else f"repeat{repeat + 1}-fold{fold + 1}"
        fold_dir = out / name
        record = fold_dir / "fold.json"
        if record.is_file():
            results.append(json.loads(record.read_text()))
            print(f"{name}: finished earlier, kept")
            continue
        t_fold = time.time()
        fold_dir.mkdir(parents=True, exist_ok=True)  # a round that stopped part-way continues where it was
        selection = {"train": split["train"], "val": split["val"], "test": split["test"][:0]}
        candidates = []
        for j, point in enumerate(grid):
            run_dir = fold_dir if len(grid) == 1 else fold_dir / f"grid{j + 1}"
            run_dir.mkdir(exist_ok=True)
            point_cfg = dataclasses.replace(cfg, **point, out=str(run_dir), overwrite=True)
            metrics = task.train(point_cfg, selection, run_dir)
            candidates.append({"point": point, "run": str(run_dir.relative_to(out)), "best_epoch": metrics["best_epoch"],
                               "val_score": list(task.val_score(metrics))})
            print(f"{name} candidate {j + 1}/{len(grid)} {point or '(the given config)'}: validation "
                  f"{candidates[-1]['val_score'][0]:.4f} at epoch {metrics['best_epoch']}")
        chosen = max(range(len(grid)), key=lambda j: (tuple(np.nan_to_num(candidates[j]["val_score"], nan=-np.inf)), -j))
        rows = task.test(out / candidates[chosen]["run"], split["test"])
        for row in rows:
            row.update({"repeat": repeat, "fold": fold})
        for j, candidate in enumerate(candidates):  # only the chosen checkpoint is worth its disk space
            if j != chosen and len(grid) > 1:
                shutil.rmtree(out / candidate["run"] / "checkpoint", ignore_errors=True)
        result = {"name": name, "repeat": repeat, "fold": fold, "sizes": {k: len(v) for k, v in split.items()},
                  "candidates": candidates, "chosen": candidates[chosen], "test": task.scores(rows),
                  "predictions": rows, "seconds": time.time() - t_fold}
        write_json(record, result)
        results.append(result)
        done_now += 1
        left = len(plans) - n - 1
        eta = (time.time() - t_start) / done_now * left
        main = "dice" if not task.classify else "accuracy"
        print(f"{name} done in {result['seconds'] / 60:.1f} min: test {main} {result['test'][main]:.4f}; "
              f"{left} round(s) left, about {eta / 60:.0f} min")

    summary = summarize(task, results, resamples=resamples, seed=cfg.seed)
    summary.update({"settings": settings, "wall_time_s": time.time() - t_start,
                    "rounds_seconds": float(sum(r["seconds"] for r in results))})
    write_json(out / "cv.json", summary)
    (out / "cv.md").write_text(markdown(summary))
    draw(task, results, out)
    print(markdown(summary))
    print(f"results in {out}")
    return summary


def summarize(task: _Task, results: list[dict], *, resamples: int, seed: int) -> dict:
    """Per-round and mean +- sd figures, pooled out-of-fold figures and group-bootstrap intervals."""
    names = CLASSIFY_METRICS if task.classify else SEGMENT_METRICS
    per_round = [{"name": r["name"], "chosen": r["chosen"]["point"], **{m: r["test"][m] for m in names}}
                 for r in results]
    mean_sd = {m: {"mean": float(np.nanmean([r[m] for r in per_round])),
                   "sd": float(np.nanstd([r[m] for r in per_round], ddof=1)) if len(per_round) > 1 else float("nan")}
               for m in names}
    pooled_rows = [row for r in results for row in r["predictions"]]
    pooled = task.scores(pooled_rows)
    # The resampling unit is the duplicate group, with all its rows of every repeat: copies of an image,
    # or one image predicted in several repeats, are not independent evidence.
    groups = np.array([row["group"] for row in pooled_rows])

    def stat(metric):
        return lambda rows: task.scores([pooled_rows[i] for i in rows])[metric]

    intervals = {m: group_bootstrap(stat(m), groups, resamples=resamples, seed=seed) for m in names}
    repeats = sorted({r["repeat"] for r in results})
    per_repeat = {m: [float(np.nanmean([r["test"][m] for r in results if r["repeat"] == k])) for k in repeats]
                  for m in names}
    return {"task": "classify" if task.classify else "segment", "metrics": list(names), "rounds": per_round,
            "mean_sd": mean_sd, "pooled": pooled,
            "per_repeat_mean": per_repeat,
            "repeat_sd": {m: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for m, v in per_repeat.items()},
            "pooled_95ci": {m: list(v) for m, v in intervals.items()},
            "bootstrap": {"resamples": resamples, "unit": "duplicate group (all its images together)"},
            "out_of_fold_predictions": pooled_rows}


def markdown(summary: dict) -> str:
    names = summary["metrics"]
    lines = [f"# Cross-validation ({summary['task']})", "",
             "| round | chosen | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in summary["rounds"]:
        lines.append(f"| {r['name']} | {r['chosen'] or 'given config'} | " + " | ".join(f"{r[m]:.3f}" for m in names) + " |")
    lines.append("| **mean ± sd** | | " + " | ".join(
        f"{summary['mean_sd'][m]['mean']:.3f} ± {summary['mean_sd'][m]['sd']:.3f}" for m in names) + " |")
    lines.append("| pooled (95% CI) | | " + " | ".join(
        f"{summary['pooled'][m]:.3f} ({summary['pooled_95ci'][m][0]:.3f}-{summary['pooled_95ci'][m][1]:.3f})"
        for m in names) + " |")
    if len(summary["per_repeat_mean"][names[0]]) > 1:
        lines += ["", "Seed-to-seed variation (mean over the folds of each repeat, then sd over repeats): " + "; ".join(
            f"{m} {', '.join(f'{v:.3f}' for v in summary['per_repeat_mean'][m])} (sd {summary['repeat_sd'][m]:.3f})"
            for m in names)]
    lines += ["", f"Pooled = every out-of-fold prediction together ({len(summary['out_of_fold_predictions'])}); "
              f"95% CI: {summary['bootstrap']['resamples']} bootstrap resamples of whole duplicate groups."]
    return "\n".join(lines) + "\n"


def draw(task: _Task, results: list[dict], out: Path) -> None:
    main = "accuracy" if task.classify else "dice"
    plots.fold_bars([r["name"] for r in results], [r["test"][main] for r in results], out / "folds.png", metric=main)
    if task.classify:
        curves = [(r["name"], [p["label"] for p in r["predictions"]], [p["probability"] for p in r["predictions"]])
                  for r in results]
        pooled = [p for r in results for p in r["predictions"]]
        curves.append(("pooled", [p["label"] for p in pooled], [p["probability"] for p in pooled]))
        plots.roc_figure(curves, out / "roc.png")
