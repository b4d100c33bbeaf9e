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
    for key in ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy"):
        assert key in metrics["epochs"][0]
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert tn + fp + fn + tp == metrics["split_sizes"]["test"]
    assert metrics["test_accuracy"] == pytest.approx((tn + tp) / (tn + fp + fn + tp))
    assert metrics["mean_test_accuracy_over_epochs"] == pytest.approx(
        sum(e["test_accuracy"] for e in metrics["epochs"]) / 2)
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["lr"] == 1e-3 and config["weight_decay"] == 4e-4
    split = json.loads((out / "split.json").read_text())
    assert sum(len(v) for v in split.values()) == 20


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
    assert sum(len(v) for v in json.loads((out / "split.json").read_text()).values()) == 20
