"""``python -m jaxmri.reproduce``: the plan, its commands, the report on phantoms, resume, and bad input."""

import dataclasses
import json
import re
import shlex

import cv2
import numpy as np
import pytest

from jaxmri.config import ClassifyConfig, SegmentConfig
from jaxmri.data.split import grouped_subset
from jaxmri.errors import DataError, RunDirError
from jaxmri.evaluation.report import write_report
from jaxmri.evaluation.reproduction import command_line, find_data, plan, run_plan
from jaxmri.reproduce import main
from jaxmri.train import build_parser, config_from_args

TINY = {ClassifyConfig: {"epochs": 1, "image_size": 32, "batch_size": 16},
        SegmentConfig: {"epochs": 1, "image_size": 32, "width": 4}}


def tiny_plan(weights="no-such-weights.safetensors"):
    """The quick plan on the phantom set, shrunk to 1 epoch at 32x32 and 2 folds."""
    return [dataclasses.replace(e, cfg=dataclasses.replace(e.cfg, **TINY[type(e.cfg)]), folds=2 if e.folds else 0)
            for e in plan("quick", data=None, masks=None, weights=weights)]


def test_plan_budgets_and_vgg19_label(tmp_path):
    quick, paper = plan("quick", data="d", masks="m"), plan("paper", data="d", masks="m")
    assert [e.name for e in quick] == [e.name for e in paper] == [
        "cnn", "unet-all", "unet-third", "cv-cnn", "cv-rescnn", "cv-unet", "vgg19"]
    by_name = {e.name: e for e in paper}
    assert by_name["cnn"].cfg.epochs == by_name["vgg19"].cfg.epochs == 50 and by_name["vgg19"].cfg.image_size == 224
    assert by_name["unet-all"].cfg.epochs == 150 and by_name["cv-unet"].folds == 5
    assert by_name["unet-third"].cfg.train_fraction == pytest.approx(1 / 3)
    assert sum(e.cfg.epochs * max(e.folds, 1) for e in quick) < sum(e.cfg.epochs * max(e.folds, 1) for e in paper) / 10
    # No weights file: VGG19 is a labelled random-init run; with one: ImageNet.
    assert by_name["vgg19"].cfg.pretrained == "none" and "random-init" in by_name["vgg19"].title
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    vgg = {e.name: e for e in plan("paper", data="d", masks="m", weights=str(weights))}["vgg19"]
    assert vgg.cfg.pretrained == "imagenet" and vgg.cfg.weights == str(weights) and "random" not in vgg.title
    with pytest.raises(ValueError, match="--budget"):
        plan("huge", data=None, masks=None)


def test_each_command_line_parses_back_to_its_config():
    for exp in plan("paper", data="../shared/data/brain_tumor_dataset", masks="a b.json", weights="w.safetensors"):
        line = command_line(exp, "report/runs/" + exp.name)
        words = shlex.split(line)  # a value with a space stays one word
        assert words[:3] == ["python", "-m", "jaxmri.evaluate" if exp.folds else "jaxmri.train"]
        argv = words[3:]
        if exp.folds:
            i = argv.index("--folds")
            assert int(argv[i + 1]) == exp.folds
            argv = argv[:i] + argv[i + 2:]
        cfg = config_from_args(build_parser().parse_args(argv))
        assert cfg == dataclasses.replace(exp.cfg, out="report/runs/" + exp.name), line


def test_find_data_layouts(tmp_path):
    (tmp_path / "brain_tumor_dataset" / "yes").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    coco = tmp_path / "annotations" / "tumor_polygons_coco.json"
    coco.write_text("{}")
    assert find_data(str(tmp_path), None) == (str(tmp_path / "brain_tumor_dataset"), str(coco))
    # The class folders themselves, with the annotations beside them.
    assert find_data(str(tmp_path / "brain_tumor_dataset"), None) == (str(tmp_path / "brain_tumor_dataset"), str(coco))
    assert find_data(None, None) == (None, None)
    coco.unlink()
    with pytest.raises(DataError, match="--masks"):
        find_data(str(tmp_path), None)
    with pytest.raises(DataError, match="no such file"):
        find_data(str(tmp_path), str(tmp_path / "nope.json"))
    with pytest.raises(DataError, match="no such folder"):
        find_data(str(tmp_path / "nope"), None)
    with pytest.raises(DataError, match="needs --data"):
        find_data(None, str(tmp_path))


def test_grouped_subset_keeps_whole_groups_per_class():
    labels = np.array([0] * 30 + [1] * 60)
    groups = np.repeat(np.arange(45), 2)  # 45 pairs of duplicates, each pair one class
    indices = np.arange(5, 90)
    kept = grouped_subset(indices, labels, groups, 1 / 3, seed=1)
    assert set(kept) <= set(indices) and np.all(np.diff(kept) > 0)
    assert set(groups[kept]).isdisjoint(set(groups[np.setdiff1d(indices, kept)]))  # no group cut in two
    for c, n in ((0, 25), (1, 60)):
        assert abs(np.sum(labels[kept] == c) - n / 3) <= 2
    assert np.array_equal(kept, grouped_subset(indices, labels, groups, 1 / 3, seed=1))
    assert not np.array_equal(kept, grouped_subset(indices, labels, groups, 1 / 3, seed=2))
    assert np.array_equal(grouped_subset(indices, labels, groups, 1.0), indices)
    tiny = grouped_subset(indices, labels, groups, 0.01)
    assert set(labels[tiny]) == {0, 1}  # every class keeps a group
    with pytest.raises(ValueError, match="fraction"):
        grouped_subset(indices, labels, groups, 0.0)
    with pytest.raises(ValueError, match="train-fraction"):
        SegmentConfig(train_fraction=1.5)


def _figure_links(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def test_reproduce_on_phantoms_writes_a_report_from_its_runs_and_resumes(tmp_path):
    out = tmp_path / "report"
    experiments = tiny_plan()
    records = run_plan(experiments, out, budget="quick", progress=False)
    assert [r["kept"] for r in records] == [False] * len(experiments)
    path = write_report(experiments, out, budget="quick", records=records, argv=["--budget", "quick"])
    report = path.read_text()
    assert "NOT the paper's protocol" in report and "phantom set" in report
    # The numbers come from the runs: the CNN row shows its run's own figures, and the two U-Nets differ in
    # their training images only.
    cnn = json.loads((out / "runs/cnn/metrics.json").read_text())
    row = next(line for line in report.splitlines() if line.startswith("| SmallCNN"))
    assert f"{100 * cnn['mean_test_accuracy_over_epochs']:.1f}%" in row and "Basic CNN 66.2%" in row
    cv = json.loads((out / "runs/cv-rescnn/cv.json").read_text())
    row = next(line for line in report.splitlines() if line.startswith("| ResCNN"))
    assert f"{cv['pooled']['roc_auc']:.3f}" in row
    assert len(cv["out_of_fold_predictions"]) == 100  # every phantom image tested once
    all_, third = (json.loads((out / f"runs/{n}/metrics.json").read_text())["split_sizes"] for n in ("unet-all", "unet-third"))
    assert third["train"] < all_["train"] / 2 and third["test"] == all_["test"] and third["val"] == all_["val"]
    assert "random-init" in report
    links = _figure_links(report)
    assert len(links) >= 12 and any("gradcam" in link for link in links)
    missing = [link for link in links if not (out / link).is_file()]
    assert not missing, missing
    assert report.count("python -m jaxmri.") >= len(experiments)

    # The same plan again: everything is kept, nothing is trained or rewritten.
    stamp = (out / "runs/cnn/metrics.json").stat().st_mtime_ns
    again = run_plan(experiments, out, budget="quick", progress=False)
    assert all(r["kept"] for r in again)
    assert (out / "runs/cnn/metrics.json").stat().st_mtime_ns == stamp
    # Another plan into the same folder is refused, naming what differs.
    other = [dataclasses.replace(e, cfg=dataclasses.replace(e.cfg, epochs=2)) for e in experiments]
    with pytest.raises(RunDirError, match="experiments"):
        run_plan(other, out, budget="quick", progress=False)


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "no such folder" in err[0]
    (tmp_path / "classes" / "yes").mkdir(parents=True)
    assert main(["--data", str(tmp_path / "classes"), "--out", str(tmp_path / "r")]) == 2
    assert "--masks" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written before the input is known to be good
    bad = tmp_path / "bad"
    for cls in ("yes", "no"):
        (bad / cls).mkdir(parents=True)
    (bad / "yes" / "Y1.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(bad / "no" / "N1.png"), np.full((40, 40), 128, np.uint8))
    masks = tmp_path / "m.json"
    masks.write_text("{}")
    assert main(["--data", str(bad), "--masks", str(masks), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "Y1.jpg" in err and "Traceback" not in err
    assert not (tmp_path / "r2" / "runs").exists()  # validated before the first experiment
    with pytest.raises(SystemExit) as exit_info:
        main(["--budget", "huge"])
    assert exit_info.value.code == 2
