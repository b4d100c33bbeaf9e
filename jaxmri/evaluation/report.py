"""``REPORT.md``: the paper's Tables 1 and 4 beside ours, with intervals, figures, commands and the machine.

Every number in the report is read from the run and evaluation directories that ``reproduction.run_plan``
wrote (``metrics.json``, ``split.json``, ``cv.json``); nothing is typed in except the paper's own figures
below. Single-split figures get a 95% interval from 2,000 bootstrap resamples of the test part's
duplicate groups, the same resampling ``cv.json`` uses for its pooled out-of-fold figures.
"""

import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from jaxmri.evaluation.bootstrap import RESAMPLES, group_bootstrap
from jaxmri.evaluation.crossval import markdown as cv_markdown
from jaxmri.evaluation.reproduction import Experiment, command_line

PAPER_TABLE1 = {"yes": (124, 31), "no": (77, 41)}  # class: (training, testing), 273 images
PAPER_TABLE4 = {"Baseline": 0.50, "Basic CNN": 0.6622, "VGG19": 0.7719}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "opencv-python-headless", "matplotlib")


def environment() -> dict:
    """Python and package versions, the CPU, core count and JAX devices."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "packages": versions, "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "devices": [str(d) for d in jax.devices()]}


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _groups_by_path(run_dir: Path, part: str = "test") -> dict[str, int]:
    return {row["path"]: row["group"] for row in _json(run_dir / "split.json")["parts"][part]}


def split_counts(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Per class of a classification run: (training + validation images, test images)."""
    split = _json(run_dir / "split.json")
    counts = {}
    for c, name in enumerate(split["class_names"]):
        train = sum(row["label"] == c for part in ("train", "val") for row in split["parts"][part])
        counts[name] = (train, sum(row["label"] == c for row in split["parts"]["test"]))
    return counts


def test_accuracy_interval(run_dir: Path, resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% interval of a classification run's test accuracy, resampling duplicate groups of its test part."""
    rows = _json(run_dir / "metrics.json")["test_predictions"]
    groups = _groups_by_path(run_dir)
    correct = np.array([int(np.argmax(r["probabilities"]) == r["label"]) for r in rows], np.float64)
    return group_bootstrap(lambda i: correct[i].mean(), [groups[r["path"]] for r in rows], resamples=resamples)


def test_dice_interval(run_dir: Path, resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% interval of a segmentation run's mean test Dice, resampling duplicate groups of its test part."""
    rows = _json(run_dir / "metrics.json")["per_image"]
    groups = _groups_by_path(run_dir)
    dice = np.array([r["dice"] for r in rows], np.float64)
    return group_bootstrap(lambda i: dice[i].mean(), [groups[r["path"]] for r in rows], resamples=resamples)


def _pct(x: float) -> str:
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:.1f}%"


def _ci(lo_hi, percent: bool = True) -> str:
    lo, hi = lo_hi
    if np.isnan(lo):
        return "n/a"
    return f"{100 * lo:.1f}-{100 * hi:.1f}" if percent else f"{lo:.3f}-{hi:.3f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _table1(out: Path, cnn: Experiment) -> list[str]:
    ours = split_counts(out / "runs" / cnn.name)
    lines = ["## Table 1: training and testing split by class", "",
             "| class | paper: training | paper: testing | ours: training (+ validation) | ours: testing |",
             "|---|---|---|---|---|"]
    for name, (train, test) in ours.items():
        paper = PAPER_TABLE1.get(name.lower(), ("-", "-"))
        lines.append(f"| {name} | {paper[0]} | {paper[1]} | {train} | {test} |")
    total = sum(a + b for a, b in ours.values())
    lines += ["", f"The paper split 273 images at random; ours are the {total} images of the data set as given, split "
              "with whole duplicate groups on one side (`split.json` in the run lists every file), the validation "
              "part (which picks the checkpoint) carved from the training side. The paper has no validation part.", ""]
    return lines


def _table4(out: Path, by_name: dict[str, Experiment]) -> list[str]:
    lines = ["## Table 4: mean test accuracy", "",
             "| model | paper (Table 4) | ours: mean test accuracy over epochs (the paper's metric) | ours: best-validation "
             "checkpoint, test accuracy (95% CI) | ours: k-fold accuracy, mean ± sd | ours: pooled out-of-fold "
             "accuracy (95% CI) | ours: pooled ROC-AUC (95% CI) |", "|---|---|---|---|---|---|---|"]
    cnn_dir = out / "runs" / by_name["cnn"].name
    labels = [r["label"] for r in _json(cnn_dir / "metrics.json")["test_predictions"]]
    majority = max(np.mean(np.array(labels) == c) for c in set(labels)) if labels else float("nan")
    lines.append(f"| Baseline | {_pct(PAPER_TABLE4['Baseline'])} | | {_pct(majority)} (always the larger class) "
                 "| | | |")
    rows = [("Basic CNN", "cnn", "cv-cnn"), ("VGG19", "vgg19", None), ("ResCNN", None, "cv-rescnn")]
    for label, single, cv in rows:
        cells = [by_name[single].title if single else by_name[cv].title,
                 f"{label} {_pct(PAPER_TABLE4[label])}" if label in PAPER_TABLE4 else "-"]
        if single and single in by_name:
            run_dir = out / "runs" / by_name[single].name
            m = _json(run_dir / "metrics.json")
            cells += [_pct(m["mean_test_accuracy_over_epochs"]),
                      f"{_pct(m['test_accuracy'])} ({_ci(test_accuracy_interval(run_dir))}), epoch {m['best_epoch']}"]
        else:
            cells += ["-", "-"]
        if cv and cv in by_name:
            s = _json(out / "runs" / by_name[cv].name / "cv.json")
            acc = s["mean_sd"]["accuracy"]
            cells += [f"{_pct(acc['mean'])} ± {100 * acc['sd']:.1f}",
                      f"{_pct(s['pooled']['accuracy'])} ({_ci(s['pooled_95ci']['accuracy'])})",
                      f"{s['pooled']['roc_auc']:.3f} ({s['pooled_95ci']['roc_auc'][0]:.3f}-"
                      f"{s['pooled_95ci']['roc_auc'][1]:.3f})"]
        else:
            cells += ["not run (5 folds of VGG19 cost 5 of its runs)" if single == "vgg19" else "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The paper's metric averages the test accuracy of every epoch, so it is not the accuracy of any model "
              "one could use; the best-validation checkpoint is. One split's test part is a few dozen images, so its "
              "interval is wide; the k-fold columns test every image once, each round choosing its checkpoint on "
              "validation images only (`cv.md` of each evaluation, below).", ""]
    return lines


def _segmentation(out: Path, by_name: dict[str, Experiment]) -> list[str]:
    lines = ["## Segmentation (Section 3.2)", "",
             "| model | training images | test images | Dice (95% CI) | IoU | pixel accuracy | sensitivity | best epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("unet-all", "unet-third"):
        if name not in by_name:
            continue
        run_dir = out / "runs" / by_name[name].name
        m = _json(run_dir / "metrics.json")
        sizes = m["split_sizes"]
        lines.append(f"| {by_name[name].title} | {sizes['train']} | {sizes['test']} | {m['dice']:.3f} "
                     f"({_ci(test_dice_interval(run_dir), percent=False)}) | {m['iou']:.3f} | "
                     f"{m['pixel_accuracy']:.3f} | {m['sensitivity']:.3f} | {m['best_epoch']} |")
    lines += ["", "The paper reports no segmentation figure: Figure 5 shows one example of each model, and Section 4 "
              "says the model trained for 2 epochs on every image beat the one trained for 10 epochs on a third. Here "
              "both use our CPU recipe (128x128 input, BCE + Dice loss, the same epochs, the same validation and "
              "test images) and differ only in the training images.", ""]
    return lines


def _gradcam_examples(out: Path, cnn: Experiment, count: int = 4) -> list[str]:
    """Grad-CAM of the SmallCNN run on its first ``count`` tumor test images, with ``jaxmri.predict``'s code."""
    from jaxmri.inference.load import load_run
    from jaxmri.inference.predictor import predict_files

    run_dir = out / "runs" / cnn.name
    metrics = _json(run_dir / "metrics.json")
    tumor = metrics["class_names"].index("yes") if "yes" in metrics["class_names"] else 1
    files = [str(Path(metrics["dataset"]) / r["path"]) for r in metrics["test_predictions"] if r["label"] == tumor][:count]
    folder = out / "figures" / "gradcam"
    folder.mkdir(parents=True, exist_ok=True)
    records = predict_files(load_run(run_dir), files, folder, explain=True, progress=False)
    return [f"![Grad-CAM {Path(r['file']).name}](figures/gradcam/{r['gradcam']})" for r in records if "gradcam" in r]


def write_report(experiments: list[Experiment], out: Path, *, budget: str, records: list[dict],
                 argv: list[str]) -> Path:
    """Write ``out / "REPORT.md"`` from the finished experiments; returns its path."""
    out = Path(out)
    by_name = {e.name: e for e in experiments}
    data = experiments[0].cfg.data
    head = ["# Reproducing Blue, Burkhart & Manuel (2024) with jaxmri", ""]
    if budget == "quick":
        head += ["**Budget `quick`: a few epochs per model and fewer folds (the exact settings are under Commands). "
                 "This checks that the whole protocol runs; its numbers are NOT the paper's protocol (`--budget "
                 "paper` is).**", ""]
    else:
        head += ["Budget `paper`: the full protocol (50 epochs for each classifier, 150 for the U-Net, 5 folds).", ""]
    head += [f"Data: `{data}`." if data else "Data: **the generated phantom set** (synthetic images, not MRI).",
             f"Written {time.strftime('%Y-%m-%d %H:%M')} by `python -m jaxmri.reproduce {' '.join(argv)}`.", ""]
    lines = head + _table1(out, by_name["cnn"]) + _table4(out, by_name)
    for name in ("cv-cnn", "cv-rescnn"):
        if name in by_name:
            lines += [f"### k-fold: {by_name[name].title}", "",
                      cv_markdown(_json(out / "runs" / name / "cv.json")).split("\n", 2)[2], ""]
    lines += _segmentation(out, by_name)
    if "cv-unet" in by_name:
        lines += [f"### k-fold: {by_name['cv-unet'].title}", "",
                  cv_markdown(_json(out / "runs" / "cv-unet" / "cv.json")).split("\n", 2)[2], ""]
    lines += ["## Figures", "", "Learning curves (like the paper's Figures 2-3) and test confusion matrices:", ""]
    for name in ("cnn", "vgg19"):
        lines += [f"![{name} learning curves](runs/{name}/learning_curves.png)",
                  f"![{name} confusion matrix](runs/{name}/confusion_matrix.png)"]
    lines += ["", "Predicted masks on test images (like Figure 5):", ""]
    lines += [f"![{name} overlays](runs/{name}/overlays.png)" for name in ("unet-all", "unet-third")]
    lines += ["", "k-fold ROC curves (per round and pooled) and per-round bars:", ""]
    for name in ("cv-cnn", "cv-rescnn", "cv-unet"):
        lines += ([f"![{name} ROC](runs/{name}/roc.png)"] if name != "cv-unet" else []) + [
            f"![{name} folds](runs/{name}/folds.png)"]
    lines += ["", "Grad-CAM of the SmallCNN on tumor test images (`python -m jaxmri.predict --explain`):", ""]
    lines += _gradcam_examples(out, by_name["cnn"])
    lines += ["", "## Commands", "", "Each experiment is one command of the library; this report ran them in this order:",
              "", "```"] + [command_line(e, f"{out}/runs/{e.name}") for e in experiments] + ["```", ""]
    lines += _machine(out, experiments, records)
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _machine(out: Path, experiments: list[Experiment], records: list[dict]) -> list[str]:
    env = environment()
    lines = ["## Machine, versions and wall times", "",
             f"{env['cpu']}, {env['cores']} cores; {env['platform']}; JAX devices {', '.join(env['devices'])}.",
             "Python " + env["python"] + "; " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + ".", "",
             "| experiment | wall time | |", "|---|---|---|"]
    total = 0.0
    for exp, record in zip(experiments, records):
        run_dir = out / "runs" / exp.name
        seconds = (_json(run_dir / "cv.json")["rounds_seconds"] if exp.folds
                   else _json(run_dir / "metrics.json")["wall_time_s"])
        total += seconds
        lines.append(f"| {exp.name} | {_minutes(seconds)} | {'kept from an earlier invocation' if record['kept'] else ''} |")
    lines += [f"| **all** | **{_minutes(total)}** | |", ""]
    return lines
