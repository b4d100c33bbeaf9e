"""python -m jaxmri.predict on run directories written by tiny phantom training runs in this file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from jaxmri.data.crop import brain_crop, crop_resize
from jaxmri.data.phantom import make_phantom
from jaxmri.evaluation.metrics import segmentation_scores
from jaxmri.inference import load_run, output_names
from jaxmri.inference.outputs import paste_back
from jaxmri.predict import main as predict
from jaxmri.train import main as train


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, phantom_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cnn"
    assert train(["classify", "--data", str(phantom_dir), "--epochs", "2", "--image-size", "32", "--batch-size", "8",
                  "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory, phantom_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "unet"
    assert train(["segment", "--data", str(phantom_dir), "--masks", str(phantom_dir / "masks"), "--epochs", "1",
                  "--width", "4", "--image-size", "32", "--out", str(out)]) == 0
    return out


def read_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_classifier_records_in_input_order_with_their_fields(cnn_run, phantom_dir, tmp_path):
    inputs = [str(phantom_dir / "yes"), str(phantom_dir / "no" / "healthy_000.png")]
    assert predict(["--run", str(cnn_run), "--out", str(tmp_path / "p"), "--no-progress", *inputs]) == 0
    records = read_records(tmp_path / "p")
    assert len(records) == 13 and records[-1]["file"] == inputs[1]
    assert [Path(r["file"]).name for r in records[:12]] == sorted(p.name for p in (phantom_dir / "yes").iterdir())
    for record in records:
        assert set(record) == {"file", "label", "tumor_probability", "probabilities", "box"}
        assert record["label"] in ("no", "yes") and isinstance(record["tumor_probability"], float)
        assert record["probabilities"]["yes"] == record["tumor_probability"]
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_classifier_predictions_equal_the_runs_own_test_predictions(cnn_run, phantom_dir, tmp_path):
    """Same probabilities as training's evaluation of its test split: the preprocessing is the same."""
    expected = json.loads((cnn_run / "metrics.json").read_text())["test_predictions"]
    files = [str(phantom_dir / row["path"]) for row in expected]
    assert predict(["--run", str(cnn_run), "--out", str(tmp_path / "p"), "--no-progress", *files]) == 0
    got = read_records(tmp_path / "p")
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got],
                               [row["probabilities"] for row in expected], rtol=1e-5, atol=1e-6)


def test_unet_masks_have_each_inputs_own_size_and_mode(unet_run, tmp_path):
    images, _, _ = make_phantom(1, 0, seed=5)
    rgb = cv2.resize(images[0], (517, 301), interpolation=cv2.INTER_AREA)  # odd, non-square
    scans = tmp_path / "scans"
    scans.mkdir()
    cv2.imwrite(str(scans / "rgba.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(scans / "gray16.png"), (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257))
    cv2.imwrite(str(scans / "scan.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "p"
    assert predict(["--run", str(unet_run), "--out", str(out), "--no-progress", str(scans)]) == 0
    for record in read_records(out):
        assert record["size"] == [301, 517]
        for key in ("mask", "overlay"):
            written = cv2.imread(str(out / record[key]), cv2.IMREAD_UNCHANGED)
            assert written.shape[:2] == (301, 517), (record["file"], key)
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.ndim == 2 and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert record["tumor_pixels"] == int((mask > 0).sum())
        assert record["tumor_fraction"] == pytest.approx(record["tumor_pixels"] / (301 * 517))


@pytest.mark.parametrize("size", [(301, 517), (517, 301), (160, 160), (999, 233)])
def test_a_mask_pasted_back_lines_up_with_the_phantoms_tumor(size):
    """The model's square crop, mapped back onto an odd-size scan, covers the phantom's own tumor."""
    images, _, masks = make_phantom(3, 0, seed=11)
    dice = []
    for image, mask in zip(images, masks):
        rgb = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
        truth = cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST)
        _, box = brain_crop(rgb, 128, 1)
        square = crop_resize(truth.astype(np.float32), box, 128, cv2.INTER_AREA)  # a perfect model's output
        back = paste_back(square, box, size) > 0.5
        assert back.shape == size
        dice.append(segmentation_scores(truth[None], back[None])["dice"][0])
    assert min(dice) > 0.9, dice


def test_inputs_with_one_name_in_two_folders_do_not_overwrite_each_other(unet_run, phantom_dir, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    shutil.copy(phantom_dir / "yes" / "tumor_000.png", tmp_path / "a" / "scan.png")
    shutil.copy(phantom_dir / "yes" / "tumor_001.png", tmp_path / "b" / "scan.png")
    shutil.copy(phantom_dir / "yes" / "tumor_002.png", tmp_path / "b" / "other.png")
    out = tmp_path / "p"
    assert predict(["--run", str(unet_run), "--out", str(out), "--no-progress", str(tmp_path / "a"),
                    str(tmp_path / "b")]) == 0
    masks = [r["mask"] for r in read_records(out)]
    assert len(set(masks)) == 3 and "other_mask.png" in masks
    assert all((out / m).is_file() for m in masks)
    assert output_names(["x/s.png", "y/s.png", "s.jpg", "t.png"])[3] == "t"
    assert len(set(output_names(["x/s.png", "y/s.png", "s.jpg"]))) == 3


def test_bad_files_get_an_error_record_and_the_rest_are_still_predicted(cnn_run, phantom_dir, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    good = phantom_dir / "yes" / "tumor_000.png"
    shutil.copy(good, scans / "a_good.png")
    (scans / "b_empty.png").write_bytes(b"")
    (scans / "c_truncated.png").write_bytes(good.read_bytes()[:300])
    (scans / "d_text.jpg").write_text("not an image at all")
    (scans / "e_bad_jpeg.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50 + b"\xff\xda" + b"\x01" * 20 + b"\xff\xd9")
    out = tmp_path / "p"
    assert predict(["--run", str(cnn_run), "--out", str(out), "--no-progress", str(scans)]) == 1
    records = read_records(out)
    assert [Path(r["file"]).name for r in records] == sorted(p.name for p in scans.iterdir())
    assert "label" in records[0] and all(set(r) == {"file", "error"} for r in records[1:])
    err = capsys.readouterr().err
    for record in records[1:]:
        assert f"{record['file']}: {record['error']}" in err
    assert "empty file" in records[1]["error"] and "truncated PNG" in records[2]["error"]
    assert "Traceback" not in err


def test_usage_errors_exit_2_with_one_line_and_write_nothing(cnn_run, phantom_dir, tmp_path, capsys):
    image = str(phantom_dir / "yes" / "tumor_000.png")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    edited = tmp_path / "edited"
    shutil.copytree(cnn_run, edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "image_size": 64}))  # no longer fits checkpoint/
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    cases = [
        (["--run", str(tmp_path / "missing"), "--out", str(tmp_path / "o1"), image], "no such run directory"),
        (["--run", str(foreign), "--out", str(tmp_path / "o2"), image], "no config.json"),
        (["--run", str(edited), "--out", str(tmp_path / "o3"), image], "checkpoint/ does not match"),
        (["--run", str(cnn_run), "--out", str(used), image], "already exists and is not empty"),
        (["--run", str(cnn_run), "--out", str(tmp_path / "o4"), str(foreign)], "no images found"),
        (["--run", str(cnn_run), "--out", str(tmp_path / "o5"), str(tmp_path / "nope.png")], "no such file or folder"),
        (["--run", str(cnn_run), "--out", str(tmp_path / "o6"), "--batch-size", "0", image], "--batch-size"),
    ]
    for args, message in cases:
        assert predict(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


def test_explain_on_a_unet_run_is_a_usage_error(unet_run, phantom_dir, tmp_path, capsys):
    assert predict(["--run", str(unet_run), "--out", str(tmp_path / "p"), "--explain",
                    str(phantom_dir / "yes")]) == 2
    assert "--explain needs a classifier" in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_load_run_rebuilds_the_trained_model(cnn_run):
    run = load_run(cnn_run)
    assert run.task == "classify" and run.class_names == ("no", "yes") and run.cfg.image_size == 32
    assert type(run.model).__name__ == "SmallCNN" and run.channels == 3


def test_predict_runs_as_a_subprocess_with_explain(cnn_run, phantom_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "jaxmri.predict", "--run", str(cnn_run), "--out", str(tmp_path / "p"),
                             "--explain", "--no-progress", str(phantom_dir / "no")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    records = read_records(tmp_path / "p")
    assert len(records) == 8 and all((tmp_path / "p" / r["gradcam"]).is_file() for r in records)


def test_predict_transforms_a_vgg19s_kernels_once_for_all_the_files(cnn_run, phantom_dir, tmp_path, monkeypatch):
    """``predict_files`` runs every batch inside ``winograd_cache(run.model)`` (a no-op for this SmallCNN run;
    for a VGG19 its Winograd kernels are then transformed once for the whole folder, not per batch)."""
    from jaxmri.inference import predict_files, predictor

    entered = []
    real = predictor.winograd_cache

    def recording(model, optimizer=None):
        entered.append((model, optimizer))
        return real(model, optimizer)

    monkeypatch.setattr(predictor, "winograd_cache", recording)
    run = load_run(cnn_run)
    files = sorted(str(p) for p in (phantom_dir / "yes").iterdir())
    records = predict_files(run, files, tmp_path, batch_size=4, progress=False)
    assert len(records) == len(files) and entered == [(run.model, None)]
