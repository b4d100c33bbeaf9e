"""The command line end to end on the phantom: run directories, metrics files, and one-line errors."""

import json
import subprocess
import sys

import pytest

from jaxmri.train import main


def run_cli(*args):
    """Run ``python -m jaxmri.train`` in a subprocess (fresh process: what a user sees)."""
    return subprocess.run([sys.executable, "-m", "jaxmri.train", *map(str, args)], capture_output=True, text=True)


def test_classify_one_epoch_writes_a_complete_run_directory(tmp_path, phantom_dir):
    out = tmp_path / "run"
    code = main(["classify", "--arch", "cnn", "--data", str(phantom_dir), "--epochs", "2", "--image-size", "64",
                 "--batch-size", "8", "--out", str(out)])
    assert code == 0
    for name in ("config.json", "split.json", "metrics.json", "learning_curves.png", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    assert (out / "checkpoint").is_dir()
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2
    for key in ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "seconds", "compile_seconds"):
        assert key in metrics["epochs"][0]
    assert 0.0 <= metrics["epochs"][0]["compile_seconds"] <= metrics["epochs"][0]["seconds"]
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert tn + fp + fn + tp == metrics["split_sizes"]["test"]
    assert metrics["test_accuracy"] == pytest.approx((tn + tp) / (tn + fp + fn + tp))
    assert metrics["mean_test_accuracy_over_epochs"] == pytest.approx(
        sum(e["test_accuracy"] for e in metrics["epochs"]) / 2)
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["lr"] == 1e-3 and config["weight_decay"] == 4e-4
    split = json.loads((out / "split.json").read_text())
    assert split["class_names"] == ["no", "yes"] and sum(len(v) for v in split["parts"].values()) == 20
    row = split["parts"]["train"][0]
    assert set(row) == {"path", "label", "group", "box", "size"} and len(row["box"]) == 4 and len(row["size"]) == 2


def test_default_run_uses_the_phantom_and_says_so(tmp_path):
    out = tmp_path / "run"
    result = run_cli("classify", "--epochs", "1", "--image-size", "32", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "No --data given: using a generated phantom set" in result.stdout
    assert (out / "phantom_data" / "yes").is_dir() and (out / "metrics.json").is_file()


def test_segment_one_epoch_on_the_phantom(tmp_path, phantom_dir):
    out = tmp_path / "seg"
    code = main(["segment", "--data", str(phantom_dir), "--masks", str(phantom_dir / "masks"), "--epochs", "1",
                 "--width", "4", "--image-size", "64", "--out", str(out), "--negatives", "4"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("dice", "iou", "pixel_accuracy", "epochs"):
        assert key in metrics
    assert 0.0 <= metrics["dice"] <= 1.0
    assert (out / "overlays.png").is_file() and (out / "learning_curves.png").is_file()
    split = json.loads((out / "split.json").read_text())  # the same schema as classification's
    assert split["class_names"] == ["empty mask", "tumor"]
    rows = [row for part in split["parts"].values() for row in part]
    assert all(set(row) == {"path", "label", "group", "box", "size"} for row in rows)
    assert sum(row["label"] == 0 for row in rows) == 4  # the --negatives, with empty masks


def test_config_repeats_a_run_bit_for_bit(tmp_path, phantom_dir):
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["classify", "--data", str(phantom_dir), "--epochs", "2", "--image-size", "32", "--batch-size", "8",
                 "--seed", "3", "--out", str(first)]) == 0
    assert main(["classify", "--config", str(first / "config.json"), "--out", str(again)]) == 0
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (first, again))
    for record in a["epochs"] + b["epochs"]:
        record.pop("seconds"), record.pop("compile_seconds")  # times (the repeat finds its steps compiled)
    assert a["epochs"] == b["epochs"] and a["test_accuracy"] == b["test_accuracy"]
    config = json.loads((again / "config.json").read_text())
    assert config["seed"] == 3 and config["epochs"] == 2 and config["out"] == str(again)


def test_config_flags_override_it_and_a_repeat_never_reuses_the_old_directory(tmp_path, phantom_dir, capsys):
    from jaxmri.train import build_parser, config_from_args

    first = tmp_path / "first"
    assert main(["classify", "--data", str(phantom_dir), "--epochs", "1", "--image-size", "32", "--out", str(first),
                 "--overwrite"]) == 0
    cfg = config_from_args(build_parser().parse_args(["classify", "--config", str(first / "config.json"), "--lr", "0.01"]))
    assert cfg.lr == 0.01 and cfg.image_size == 32 and cfg.data == str(phantom_dir)
    assert cfg.out is None and cfg.overwrite is False
    with pytest.raises(SystemExit) as exc:  # a classify config given to segment
        main(["segment", "--config", str(first / "config.json")])
    assert exc.value.code == 2 and "python -m jaxmri.train classify --config" in capsys.readouterr().err
    (tmp_path / "foreign.json").write_text('{"epochs": 3}')
    assert main(["classify", "--config", str(tmp_path / "foreign.json")]) == 2
    err = capsys.readouterr().err
    assert "foreign.json" in err and "not a jaxmri run config" in err and len(err.strip().splitlines()) == 1
    assert main(["classify", "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_non_empty_out_is_refused_without_overwrite(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("earlier results")
    assert main(["classify", "--epochs", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists and is not empty" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert (tmp_path / "old.txt").read_text() == "earlier results"


def test_missing_imagenet_weights_stop_at_once_naming_the_file(tmp_path):
    result = run_cli("classify", "--arch", "vgg19", "--weights", tmp_path / "nope.safetensors", "--out", tmp_path / "r")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "nope.safetensors" in line and "jaxmri.weights" in line
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_missing_data_folder_is_one_line(tmp_path):
    result = run_cli("classify", "--data", tmp_path / "nowhere", "--out", tmp_path / "r")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nowhere" in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["classify", "--epochs", "0"], "--epochs must be at least 1"),
    (["classify", "--val-fraction", "1.5"], "--val-fraction"),
    (["classify", "--arch", "resnet"], "invalid choice"),
    (["segment", "--loss", "focal"], "invalid choice"),
    (["segment", "--image-size", "100"], "multiple of 16"),
])
def test_bad_flags_exit_2_with_a_message(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(flags)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_segment_with_data_but_no_masks_is_refused(tmp_path, phantom_dir, capsys):
    assert main(["segment", "--data", str(phantom_dir), "--out", str(tmp_path / "r")]) == 2
    assert "segment needs --masks" in capsys.readouterr().err


def test_a_split_that_cannot_be_made_is_one_line(tmp_path, phantom_dir, capsys):
    code = main(["segment", "--data", str(phantom_dir), "--masks", str(phantom_dir / "masks"), "--negatives", "1",
                 "--out", str(tmp_path / "r")])
    assert code == 2
    assert "cannot split the data" in capsys.readouterr().err


def test_bad_files_stop_before_training_and_skip_unreadable_trains_on_the_rest(tmp_path, phantom_dir, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data, ignore=shutil.ignore_patterns("masks"))
    (data / "yes" / "notes.jpg").write_text("not an image")
    (data / "no" / "empty scan.png").write_bytes(b"")
    out = tmp_path / "r"
    assert main(["classify", "--data", str(data), "--epochs", "1", "--image-size", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "notes.jpg" in err and "empty scan.png" in err and "--skip-unreadable" in err
    assert not (out / "metrics.json").exists()
    assert main(["classify", "--data", str(data), "--epochs", "1", "--image-size", "32", "--out", str(out),
                 "--overwrite", "--skip-unreadable"]) == 0
    printed = capsys.readouterr()
    assert "notes.jpg" in printed.out + printed.err
    assert sum(len(v) for v in json.loads((out / "split.json").read_text())["parts"].values()) == 20


def test_no_progress_leaves_only_the_epoch_lines(tmp_path, phantom_dir, capsys):
    """``--no-progress`` (train and evaluate): no bar within an epoch, the line per epoch still prints."""
    from jaxmri.evaluate import main as evaluate

    tiny = ["--data", str(phantom_dir), "--epochs", "1", "--image-size", "32", "--batch-size", "8"]
    assert main(["classify", *tiny, "--out", str(tmp_path / "bar")]) == 0
    shown = capsys.readouterr()
    assert "epoch 1/1:" in shown.err  # the bar, as a user at a terminal sees it
    assert main(["classify", *tiny, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert evaluate(["classify", *tiny, "--folds", "2", "--bootstrap", "100", "--out", str(tmp_path / "cv"),
                     "--no-progress"]) == 0
    quiet = capsys.readouterr()
    assert "epoch 1/1:" not in quiet.err and "it/s" not in quiet.err
    assert quiet.out.count("epoch   1/1") == 3  # the run's line, then one per fold
