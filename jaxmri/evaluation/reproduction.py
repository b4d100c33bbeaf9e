"""The paper's experiments and our cross-validated versions, as one plan per budget (``python -m jaxmri.reproduce``).

``plan(budget, ...)`` lists the experiments; ``run_plan`` runs each with the library's own entry points
(``training.classify.run``, ``training.segment.run``, ``evaluation.crossval.cross_validate``), each into
``OUT/runs/<name>/``, a normal run or evaluation directory. What is finished is kept: rerunning the same
command continues with the first experiment that has no results (and an evaluation with its first
missing round). ``jaxmri.evaluation.report`` then writes ``REPORT.md`` from those directories.

=============  ===========================================================  ========================
experiment     what                                                          paper
=============  ===========================================================  ========================
``cnn``        SmallCNN, one grouped split                                   Table 4 "Basic CNN"
``unet-all``   U-Net on every annotated image, our CPU recipe                 Section 3.2, Figure 5
``unet-third`` the same on a third of the training images                    Section 3.2, Figure 5
``cv-cnn``     SmallCNN, grouped k-fold                                       future work: validation
``cv-rescnn``  ResCNN (ours), grouped k-fold                                  beyond the paper
``cv-unet``    U-Net recipe, grouped k-fold                                   future work
``vgg19``      VGG19, frozen backbone (ImageNet weights if the file is       Table 4 "VGG19"
               there, else a clearly labelled random-init backbone); last,
               as the costliest run for what it adds
=============  ===========================================================  ========================

Budgets: ``paper`` is the full protocol (50 epochs for the classifiers, 150 for the U-Net, 5 folds);
``quick`` runs the same experiments with few epochs, 3 folds and a smaller VGG19 input, so the whole
report takes minutes on 2 CPU cores; its report says so at the top.
"""

import dataclasses
import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from jaxmri.config import DEFAULT_VGG19_WEIGHTS, ClassifyConfig, SegmentConfig, load_config
from jaxmri.errors import DataError, RunDirError

BUDGETS = ("quick", "paper")


@dataclass(frozen=True)
class Experiment:
    """One experiment of the report: a ``train`` run (``folds`` 0) or an ``evaluate --folds`` run."""

    name: str  # its directory under OUT/runs/
    title: str  # its row in REPORT.md
    paper: str  # what of the paper it reproduces or extends
    cfg: ClassifyConfig | SegmentConfig
    folds: int = 0


def _settings(budget: str) -> dict:
    quick = budget == "quick"
    return {"cnn_epochs": 8 if quick else 50, "vgg19_epochs": 3 if quick else 50, "vgg19_size": 112 if quick else 224,
            "unet_epochs": 12 if quick else 150, "rescnn_epochs": 12 if quick else 50, "folds": 3 if quick else 5,
            "cv_cnn_epochs": 6 if quick else 50, "cv_unet_epochs": 10 if quick else 150}


def plan(budget: str, *, data: str | None, masks: str | None, weights: str = DEFAULT_VGG19_WEIGHTS) -> list[Experiment]:
    """The experiments of ``budget`` on the class folders ``data`` and the annotations ``masks`` (both None:
    the generated phantom set). VGG19 uses ImageNet weights when ``weights`` is a file, else random init."""
    if budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}.")
    s = _settings(budget)
    imagenet = Path(weights).is_file()
    unet = SegmentConfig(data=data, masks=masks, image_size=128, loss="bce+dice", epochs=s["unet_epochs"])
    return [
        Experiment("cnn", "SmallCNN (Table 2)", "Table 4, Basic CNN", ClassifyConfig(data=data, epochs=s["cnn_epochs"])),
        Experiment("unet-all", "U-Net, every annotated training image", "Section 3.2, full data set", unet),
        Experiment("unet-third", "U-Net, a third of the training images", "Section 3.2, a third of the data set",
                   dataclasses.replace(unet, train_fraction=1 / 3)),
        Experiment("cv-cnn", "SmallCNN (Table 2)", "future work: held-out validation",
                   ClassifyConfig(data=data, epochs=s["cv_cnn_epochs"]), folds=s["folds"]),
        Experiment("cv-rescnn", "ResCNN (ours: residual, batch norm, GAP)", "beyond the paper",
                   ClassifyConfig(data=data, arch="rescnn", image_size=128, epochs=s["rescnn_epochs"]),
                   folds=s["folds"]),
        Experiment("cv-unet", "U-Net, our CPU recipe", "future work: Dice / IoU",
                   dataclasses.replace(unet, epochs=s["cv_unet_epochs"]), folds=s["folds"]),
        Experiment("vgg19", "VGG19, frozen ImageNet backbone" if imagenet else
                   "VGG19, frozen **random-init** backbone (no ImageNet weights here)", "Table 4, VGG19",
                   ClassifyConfig(data=data, arch="vgg19", epochs=s["vgg19_epochs"], image_size=s["vgg19_size"],
                                  pretrained="imagenet" if imagenet else "none", weights=weights)),
    ]


def command_line(exp: Experiment, out: str) -> str:
    """The ``python -m jaxmri.train`` / ``jaxmri.evaluate`` command that runs ``exp`` into ``out``."""
    cfg = exp.cfg
    task = "classify" if isinstance(cfg, ClassifyConfig) else "segment"
    defaults = type(cfg)()
    words = ["python", "-m", "jaxmri." + ("evaluate" if exp.folds else "train"), task]
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name in ("out", "overwrite") or value == getattr(defaults, field.name):
            continue
        flag = "--" + field.name.replace("_", "-")
        words += [flag] if value is True else [flag, repr(value) if isinstance(value, float) else str(value)]
    if exp.folds:
        words += ["--folds", str(exp.folds)]
    return shlex.join(words + ["--out", out])


def find_data(root: str | None, masks: str | None) -> tuple[str | None, str | None]:
    """``(class folders, annotations)`` from ``--data``: the shared data folder (``brain_tumor_dataset/``
    and ``annotations/tumor_polygons_coco.json`` inside it) or the class folders themselves."""
    if root is None:
        if masks is not None:
            raise DataError("--masks needs --data (without --data the generated phantom set and its masks are used).")
        return None, None
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"--data {root}: no such folder; pass the folder that holds brain_tumor_dataset/ and "
                        "annotations/, or a folder of class folders.")
    classes = path / "brain_tumor_dataset" if (path / "brain_tumor_dataset").is_dir() else path
    if masks is None:
        for candidate in (path / "annotations" / "tumor_polygons_coco.json",
                          path.parent / "annotations" / "tumor_polygons_coco.json"):
            if candidate.is_file():
                masks = str(candidate)
                break
        else:
            raise DataError(f"--data {root}: no annotations/tumor_polygons_coco.json beside the images; pass "
                            "--masks (a COCO .json, a Labelbox export or a folder of PNG masks).")
    elif not Path(masks).exists():
        raise DataError(f"--masks {masks}: no such file or folder.")
    return str(classes), masks


def validate(experiments: list[Experiment], out: Path) -> None:
    """Read every image and annotation once before the first experiment, so a bad file stops the report
    in seconds rather than an hour in."""
    from jaxmri.data.dataset import load_image_folder
    from jaxmri.training import classify, segment

    checked = set()
    for exp in experiments:
        cfg = exp.cfg
        if isinstance(cfg, ClassifyConfig):
            classify.check_weights_available(cfg)
            if cfg.arch == "vgg19" and cfg.pretrained == "imagenet":
                from jaxmri.weights import read_weights

                read_weights(cfg.weights)  # a corrupt file stops the report now, not at its last experiment
        key = (cfg.data, getattr(cfg, "masks", None))
        if cfg.data is None or key in checked:
            continue
        checked.add(key)
        data = load_image_folder(cfg.data, image_size=32, channels=1, skip_unreadable=cfg.skip_unreadable,
                                 progress=False)
        if isinstance(cfg, SegmentConfig):
            segment.aligned_masks(data, cfg.masks, 32)


def _finished_run(run_dir: Path, cfg) -> bool:
    """True when ``run_dir`` holds a complete run of exactly ``cfg``."""
    if not (run_dir / "metrics.json").is_file():
        return False
    try:
        return load_config(run_dir / "config.json") == cfg
    except RunDirError:
        return False


def run_experiment(exp: Experiment, out: Path, *, progress: bool = True) -> dict:
    """Run (or keep the finished results of) one experiment into ``out / "runs" / exp.name``; returns
    ``{"name", "dir", "kept", "seconds"}``."""
    from jaxmri.evaluation.crossval import cross_validate
    from jaxmri.training import classify, segment

    run_dir = out / "runs" / exp.name
    cfg = dataclasses.replace(exp.cfg, out=str(run_dir), overwrite=True)
    t0 = time.time()
    if exp.folds:
        kept = (run_dir / "cv.json").is_file()
        cross_validate(dataclasses.replace(cfg, overwrite=False), folds=exp.folds, out=run_dir, progress=progress)
    else:
        kept = _finished_run(run_dir, cfg)
        if not kept:
            if run_dir.exists():  # a run that stopped part-way: start it again
                shutil.rmtree(run_dir)
            (classify if isinstance(cfg, ClassifyConfig) else segment).run(cfg, progress=progress)
    return {"name": exp.name, "dir": str(run_dir), "kept": kept, "seconds": time.time() - t0}


def run_plan(experiments: list[Experiment], out: Path, *, budget: str, overwrite: bool = False,
             progress: bool = True) -> list[dict]:
    """Validate the inputs, then run every experiment in order; returns one record per experiment.

    ``out / "reproduce.json"`` records the plan: rerunning with the same plan continues, another plan
    into the same ``out`` is refused (or started again with ``overwrite``).
    """
    from jaxmri.training.rundir import open_resumable, write_json

    settings = {"budget": budget, "experiments": [
        {"name": e.name, "folds": e.folds, "config": {k: v for k, v in dataclasses.asdict(e.cfg).items()
                                                     if k not in ("out", "overwrite")}} for e in experiments]}
    out, resuming = open_resumable(Path(out), settings, record="reproduce.json", kind="reproduction",
                                   overwrite=overwrite)
    if resuming:
        print(f"resuming the reproduction in {out}: finished experiments are kept")
    if overwrite and (out / "runs").exists():
        shutil.rmtree(out / "runs")
        write_json(out / "reproduce.json", settings)
    validate(experiments, out)
    records, t_start = [], time.time()
    for n, exp in enumerate(experiments):
        print(f"[{n + 1}/{len(experiments)}] {exp.name}: {command_line(exp, str(out / 'runs' / exp.name))}")
        records.append(run_experiment(exp, out, progress=progress))
        done = time.time() - t_start
        print(f"[{n + 1}/{len(experiments)}] {exp.name} " + ("kept from an earlier run" if records[-1]["kept"] else
              f"done in {records[-1]['seconds'] / 60:.1f} min") + f"; {done / 60:.1f} min so far")
    (out / "timings.json").write_text(json.dumps(records, indent=2) + "\n")
    return records

