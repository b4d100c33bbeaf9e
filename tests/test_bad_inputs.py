"""Bad input, command by command: each case ends in one line on stderr, the right exit status, no traceback.

The commands run in-process through their ``main(argv)``. What every case checks (``assert_one_line``):
exit status 2 (a user error; ``predict``'s per-file bad images are an ``error`` record and status 1),
exactly one line on stderr besides progress bars, ``error: ...``, naming the file or flag and what to
do, and no ``Traceback``. argparse's own usage errors are a usage line plus ``prog: error: ...`` naming
the flag, with status 2 (``assert_usage_error``). Cases whose input must not be touched also check that
what was there before is still there, unchanged. Every bad input is refused before any training: no
case here trains a model (the run directories ``predict`` and ``--resume`` read are written by hand, with
untrained weights). Odd but valid inputs (all-black, 1x1, 16-bit, RGBA, palette, CMYK, EXIF-rotated,
6000x6000, unusual names) are at the end: they must work.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from jaxmri.config import ClassifyConfig, SegmentConfig, save_config
from jaxmri.data.dataset import load_image_folder
from jaxmri.data.images import read_image
from jaxmri.evaluate import main as evaluate
from jaxmri.predict import main as predict
from jaxmri.reproduce import main as reproduce
from jaxmri.train import main as train
from jaxmri.training import classify, segment
from jaxmri.training.rundir import save_checkpoint, write_json
from jaxmri.weights import read_weights
from jaxmri.weights.__main__ import main as weights

FIXTURES = Path(__file__).parent / "fixtures"
TORCH_ZIP = FIXTURES / "vgg19_tiny_torchvision.pth"
TORCH_LEGACY = FIXTURES / "vgg19_tiny_torchvision_legacy.pth"
TINY = ["--image-size", "32", "--epochs", "1"]
PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar: "loading images:  40%|████      | 8/20 [00:00<...]"


# --------------------------------------------------------------------------------------------- helpers
def finish(main, argv, capture) -> tuple[int, list[str]]:
    """Run ``main(argv)`` in-process: its exit status and its stderr lines, progress bars left out."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capture.readouterr().err
    assert "Traceback" not in err, err
    return code, [line.strip() for line in re.split(r"[\r\n]+", err) if line.strip() and not PROGRESS.search(line)]


def assert_one_line(main, argv, capture, *words, status: int = 2) -> str:
    """The command ends with ``status`` and exactly one stderr line, ``error: ...``, holding every word."""
    code, lines = finish(main, argv, capture)
    assert code == status, (code, lines)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def assert_usage_error(main, argv, capture, *words) -> None:
    """argparse's answer: status 2, a usage line, and a last line ``prog: error: ...`` holding every word."""
    code, lines = finish(main, argv, capture)
    assert code == 2, (code, lines)
    assert lines[0].startswith("usage: ") and ": error: " in lines[-1], lines
    for word in words:
        assert word in lines[-1], (word, lines[-1])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: what a refused command must leave as it was."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def phantom_png(phantom_dir: Path, i: int = 0) -> bytes:
    return (phantom_dir / "yes" / f"tumor_{i:03d}.png").read_bytes()


def phantom_rgb(phantom_dir: Path, i: int = 0) -> np.ndarray:
    """uint8 (H, W, 3) RGB of ``yes/tumor_<i>.png`` under ``phantom_dir`` (or a copy of it)."""
    return cv2.cvtColor(cv2.imread(str(phantom_dir / "yes" / f"tumor_{i:03d}.png")), cv2.COLOR_BGR2RGB)


def damaged_jpeg(rgb: np.ndarray) -> bytes:
    """A JPEG whose scan data stops early, end marker still there: libjpeg would fill the rest with grey."""
    data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    return data[: len(data) * 6 // 10] + b"\xff\xd9"


def crc_broken_png(png: bytes) -> bytes:
    """A complete PNG with one flipped byte in its pixel data (libpng stops at a bad filter byte or CRC)."""
    data = bytearray(png)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def image_hw(phantom_dir: Path, stem: str) -> tuple[int, int]:
    return cv2.imread(str(phantom_dir / "yes" / f"{stem}.png")).shape[:2]


def coco(images, annotations) -> str:
    return json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "tumor"}]})


SQUARE = [10, 10, 40, 10, 40, 40, 10, 40]  # a polygon well inside every phantom (at least 160 px a side)


@pytest.fixture(scope="module", autouse=True)
def jax_started():
    """JAX's backend starts once, before the first case, so anything it may log never lands in a case."""
    jax.devices()


def _untrained_run(out: Path, cfg) -> Path:
    """A run directory as ``predict`` and ``--resume`` read it (config.json, split.json, checkpoint/), with
    untrained weights: building one is much faster than training, and no case here needs a trained model."""
    out.mkdir(parents=True)
    save_config(cfg, out / "config.json")
    write_json(out / "split.json", {"class_names": ["no", "yes"] if isinstance(cfg, ClassifyConfig)
                                    else ["empty mask", "tumor"], "parts": {"train": [], "val": [], "test": []}})
    key = jax.random.key(0)
    model = classify.build_model(cfg, 2, key)[0] if isinstance(cfg, ClassifyConfig) else segment.build_model(cfg, key)
    save_checkpoint(out / "checkpoint", model)
    return out


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, phantom_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cnn"
    return _untrained_run(out, ClassifyConfig(data=str(phantom_dir), image_size=32, epochs=1, batch_size=8, out=str(out)))


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory, phantom_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "unet"
    return _untrained_run(out, SegmentConfig(data=str(phantom_dir), masks=str(phantom_dir / "masks"), image_size=32,
                                             width=4, epochs=1, out=str(out)))


@pytest.fixture
def data(tmp_path, phantom_dir) -> Path:
    """A private copy of the phantom class folders (yes/ 12, no/ 8), for a case to spoil."""
    return Path(shutil.copytree(phantom_dir, tmp_path / "data", ignore=shutil.ignore_patterns("masks")))


@pytest.fixture
def a_file(tmp_path) -> Path:
    """Any file that is not what a flag wants; cases that must fail on a flag point --data at it, so that
    a flag the config wrongly accepted still stops before any image is generated or read."""
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    return path


# --------------------------------------------------------------------------- train: the data folder
def _spoil(data: Path, tmp_path: Path, kind: str):
    """Make ``data`` bad in one way; returns (the --data to pass, words the error line must hold)."""
    yes, no = data / "yes", data / "no"
    png = (yes / "tumor_000.png").read_bytes()
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if kind == "a file, not a folder":
        return yes / "tumor_000.png", ["tumor_000.png", "is a file, not a folder", "class folders"]
    if kind == "loose images, no class folders":
        loose = tmp_path / "loose"
        loose.mkdir()
        for p in list(yes.iterdir())[:3]:
            shutil.copy(p, loose)
        return loose, ["loose", "no class folders found", "move them into class folders"]
    if kind == "an empty class folder":
        for p in no.iterdir():
            p.unlink()
        return data, ["no/", "class folder has no files", "add images or remove the folder"]
    if kind == "a folder inside a class folder":
        (yes / "more").mkdir()
        shutil.copy(yes / "tumor_001.png", yes / "more")
        return data, ["yes/more", "folder inside a class folder", "move its images up"]
    if kind == "a zero-byte image":
        (yes / "empty scan.png").write_bytes(b"")
        return data, [yes / "empty scan.png", "empty file", "--skip-unreadable"]
    if kind == "a text file named .jpg":
        (no / "renamed.jpg").write_text("this is not a picture\n")
        return data, [no / "renamed.jpg", "not an image", "--skip-unreadable"]
    if kind == "a stray text file":
        (no / "readme.txt").write_text("labels by Dr. X\n")
        return data, [no / "readme.txt", "not an image file ('.txt'", "fix or remove it"]
    if kind == "an unsupported image format":
        (yes / "scan.gif").write_bytes(b"GIF89a" + bytes(40))
        return data, [yes / "scan.gif", "'.gif'", "fix or remove it"]
    if kind == "a truncated PNG":
        (yes / "cut.png").write_bytes(png[: len(png) // 2])
        return data, [yes / "cut.png", "truncated PNG", "--skip-unreadable"]
    if kind == "a PNG with damaged pixel data":
        (yes / "crc.png").write_bytes(crc_broken_png(png))
        return data, [yes / "crc.png", "cannot be decoded (libpng error", "--skip-unreadable"]
    if kind == "a JPEG whose scan data stops early":
        (yes / "damaged.jpg").write_bytes(damaged_jpeg(rgb))
        return data, [yes / "damaged.jpg", "damaged or truncated JPEG", "--skip-unreadable"]
    if kind == "a broken symbolic link":
        (no / "gone.png").symlink_to(tmp_path / "deleted.png")
        return data, [no / "gone.png", "cannot be read", "--skip-unreadable"]
    if kind == "too few images to split":
        for folder in (yes, no):
            for p in sorted(folder.iterdir())[1:]:
                p.unlink()
        return data, ["cannot split the data", "--test-fraction", "--val-fraction"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "a file, not a folder", "loose images, no class folders", "an empty class folder", "a folder inside a class folder",
    "a zero-byte image", "a text file named .jpg", "a stray text file", "an unsupported image format",
    "a truncated PNG", "a PNG with damaged pixel data", "a JPEG whose scan data stops early", "a broken symbolic link",
    "too few images to split"])
def test_train_refuses_a_bad_data_folder(kind, data, tmp_path, capsys):
    source, words = _spoil(data, tmp_path, kind)
    out = tmp_path / "run"
    assert_one_line(train, ["classify", "--data", source, "--out", out, *TINY], capsys, *words)
    assert not (out / "checkpoint").exists() and not (out / "metrics.json").exists()


def test_skip_unreadable_that_empties_a_class_folder_is_one_line(data, tmp_path, capsys):
    for p in (data / "no").iterdir():
        p.write_bytes(b"")
    assert_one_line(train, ["classify", "--data", data, "--skip-unreadable", "--out", tmp_path / "run", *TINY], capsys,
                    data / "no", "no readable images left", "empty file", "add images")


def test_two_damaged_images_are_one_line_each_without_decoder_chatter(data, tmp_path, capfd):
    """libjpeg and libpng print straight to file descriptor 2 (captured here too); the user must see only our
    lines: one per bad file, then what to do."""
    (data / "yes" / "damaged.jpg").write_bytes(damaged_jpeg(phantom_rgb(data, 1)))
    (data / "no" / "crc.png").write_bytes(crc_broken_png((data / "no" / "healthy_000.png").read_bytes()))
    code, lines = finish(train, ["classify", "--data", data, "--out", tmp_path / "run", *TINY], capfd)
    assert code == 2 and len(lines) == 3, lines
    assert lines[0].startswith("error: no/crc.png: cannot be decoded (libpng error: ")  # libpng's words, in ours
    assert lines[1] == "yes/damaged.jpg: damaged or truncated JPEG (the scan data ends before the last row of pixels)"
    assert "2 of 22 files" in lines[2] and "--skip-unreadable" in lines[2]


def test_train_refuses_a_data_folder_with_one_class(data, tmp_path, capsys):
    shutil.rmtree(data / "no")
    assert_one_line(train, ["classify", "--data", data, "--out", tmp_path / "run", *TINY], capsys,
                    data, "two class folders")


# ------------------------------------------------------------------------------ train segment: --masks
def _masks(phantom_dir: Path, tmp_path: Path, kind: str):
    """A bad --masks source for the phantom images; returns (source, words the error line must hold)."""
    hw = image_hw(phantom_dir, "tumor_000")

    def mask_folder():
        folder = Path(shutil.copytree(phantom_dir / "masks", tmp_path / "masks"))
        return folder

    def write(name, text):
        (tmp_path / name).write_text(text) if isinstance(text, str) else (tmp_path / name).write_bytes(text)
        return tmp_path / name

    if kind == "a missing .json":
        return tmp_path / "absent.json", ["absent.json", "does not exist", "check the path"]
    if kind == "a missing folder":
        return tmp_path / "mask_pngs", ["mask_pngs", "does not exist", "folder of mask images"]
    if kind == "neither JSON nor a folder":
        return write("masks.csv", "file,x,y\n"), ["masks.csv", "neither a folder of masks nor a .json"]
    if kind == "truncated COCO JSON":
        return write("cut.json", coco([], [])[:30]), ["cut.json", "is not valid JSON", "re-export"]
    if kind == "text that is not UTF-8":
        return write("latin1.json", '{"images": "é"}'.encode("latin-1")), ["latin1.json", "UTF-8", "re-export"]
    if kind == "JSON nested too deeply":
        return write("deep.json", "[" * 200_000 + "]" * 200_000), ["deep.json", "nested too deeply", "re-export"]
    if kind == "a number with 5000 digits":
        return write("long.json", coco([{"id": 1, "file_name": "tumor_000.png"}], [
            {"id": 1, "image_id": 1, "segmentation": [SQUARE]}]).replace("40]", "4" + "0" * 5000 + "]")), [
            "long.json", "too many digits", "re-export"]
    if kind == "JSON of another kind":
        return write("other.json", json.dumps({"hello": "world"})), ["other.json", "neither COCO", "Labelbox"]
    if kind == "COCO naming an image that is not in --data":
        return write("coco.json", coco([{"id": 1, "file_name": "Y99.jpg"}], [
            {"id": 1, "image_id": 1, "segmentation": [SQUARE]}])), ["coco.json", "'Y99.jpg'", "matches none of the 20"]
    if kind == "COCO with the wrong image size":
        return write("coco.json", coco([{"id": 1, "file_name": "tumor_000.png", "height": hw[0] * 2, "width": hw[1]}], [
            {"id": 1, "image_id": 1, "segmentation": [SQUARE]}])), ["coco.json", f"is {hw[0] * 2}x{hw[1]} (HxW)",
                                                                   "original image size"]
    if kind == "COCO with the size as text":
        return write("coco.json", coco([{"id": 1, "file_name": "tumor_000.png", "height": str(hw[0]), "width": hw[1]}], [
            {"id": 1, "image_id": 1, "segmentation": [SQUARE]}])), ["coco.json", "not two whole numbers"]
    if kind == "COCO with a list as image id":
        return write("coco.json", coco([{"id": [1], "file_name": "tumor_000.png"}], [])), [
            "coco.json", "images[0]", "neither a number nor a string"]
    if kind == "COCO with a 400-digit coordinate":
        return write("coco.json", coco([{"id": 1, "file_name": "tumor_000.png"}], [
            {"id": 1, "image_id": 1, "segmentation": [SQUARE[:-1] + [10 ** 400]]}])), [
            "coco.json", "polygon 0", "too large to be a pixel position"]
    if kind == "COCO with a vertex outside the image":
        return write("coco.json", coco([{"id": 1, "file_name": "tumor_000.png"}], [
            {"id": 1, "image_id": 1, "segmentation": [[10, 10, 40, 10, hw[1] + 50, 40]]}])), [
            "coco.json", "outside the", "drawn on this image"]
    if kind == "a Labelbox mask stored only as a URL":
        return write("labelbox.json", json.dumps([{"External ID": "tumor_000.png", "Label": {"objects": [
            {"title": "tumor", "instanceURI": "https://api.labelbox.com/masks/1"}]}}])), [
            "labelbox.json", "Labelbox URL", "export the masks as PNG"]
    if kind == "an empty mask folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", ["empty", "holds no mask images"]
    if kind == "a zero-byte mask":
        folder = mask_folder()
        (folder / "tumor_003.png").write_bytes(b"")
        return folder, ["mask 'tumor_003.png'", "an empty file", "re-export the mask"]
    if kind == "a mask of the wrong size":
        folder = mask_folder()
        cv2.imwrite(str(folder / "tumor_004.png"), np.zeros((7, 9), np.uint8))
        return folder, ["mask 'tumor_004.png'", "is 7x9 (HxW)", "original image size"]
    if kind == "a stray file among the masks":
        folder = mask_folder()
        (folder / "notes.txt").write_text("drawn by Dr. X")
        return folder, ["mask 'notes.txt'", "is not a mask image", "move it out"]
    if kind == "a broken link among the masks":
        folder = mask_folder()
        (folder / "tumor_005.png").unlink()
        (folder / "tumor_005.png").symlink_to(tmp_path / "deleted.png")
        return folder, ["mask 'tumor_005.png'", "cannot be read"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "a missing .json", "a missing folder", "neither JSON nor a folder", "truncated COCO JSON", "text that is not UTF-8",
    "JSON nested too deeply", "a number with 5000 digits", "JSON of another kind",
    "COCO naming an image that is not in --data", "COCO with the wrong image size", "COCO with the size as text",
    "COCO with a list as image id", "COCO with a 400-digit coordinate", "COCO with a vertex outside the image",
    "a Labelbox mask stored only as a URL", "an empty mask folder", "a zero-byte mask", "a mask of the wrong size",
    "a stray file among the masks", "a broken link among the masks"])
def test_train_segment_refuses_bad_masks(kind, phantom_dir, tmp_path, capsys):
    source, words = _masks(phantom_dir, tmp_path, kind)
    out = tmp_path / "run"
    assert_one_line(train, ["segment", "--data", phantom_dir, "--masks", source, "--width", "4", "--out", out, *TINY],
                    capsys, *words)
    assert not (out / "checkpoint").exists()


def test_train_segment_refuses_masks_without_data(phantom_dir, tmp_path, capsys):
    masks = Path(shutil.copytree(phantom_dir / "masks", tmp_path / "my_masks"))
    (masks / "tumor_000.png").rename(masks / "Y1.png")
    assert_one_line(train, ["segment", "--masks", masks, "--width", "4", "--out", tmp_path / "run", *TINY], capsys,
                    "--masks", "needs --data")


# --------------------------------------------------------------------------------------- train: flags
@pytest.mark.parametrize("task, flags, words", [
    pytest.param("classify", ["--epochs", "abc"], ["--epochs", "invalid int value"], id="epochs not a number"),
    pytest.param("classify", ["--image-size", "32.5"], ["--image-size", "invalid int value"], id="image size not whole"),
    pytest.param("classify", ["--batch-size", "0"], ["--batch-size must be at least 1"], id="batch size 0"),
    pytest.param("classify", ["--lr", "-0.001"], ["--lr must be positive"], id="negative learning rate"),
    pytest.param("classify", ["--weight-decay", "-1"], ["--weight-decay must be 0 or more"], id="negative weight decay"),
    pytest.param("classify", ["--test-fraction", "0"], ["--test-fraction must be between 0 and 1"], id="no test part"),
    pytest.param("classify", ["--val-fraction", "1"], ["--val-fraction must be in [0, 1)"], id="all validation"),
    pytest.param("classify", ["--image-size", "30"], ["--image-size must be a multiple of 4"], id="classify size 30"),
    pytest.param("classify", ["--label-smoothing", "1"], ["--label-smoothing must be in [0, 1)"], id="smoothing 1"),
    pytest.param("classify", ["--optimizer", "sgd"], ["--optimizer", "invalid choice: 'sgd'"], id="unknown optimizer"),
    pytest.param("classify", ["--schedule", "linear"], ["--schedule", "invalid choice"], id="unknown schedule"),
    pytest.param("classify", ["--pretrained", "imagenet21k"], ["--pretrained", "invalid choice"], id="unknown backbone"),
    pytest.param("classify", ["--colour", "red"], ["unrecognized arguments: --colour"], id="unknown flag"),
    pytest.param("segment", ["--width", "0"], ["--width must be a positive number"], id="U-Net width 0"),
    pytest.param("segment", ["--negatives", "-1"], ["--negatives must be 0 or more"], id="negative negatives"),
    pytest.param("segment", ["--train-fraction", "0"], ["--train-fraction must be in (0, 1]"], id="train on nothing"),
    pytest.param("segment", ["--threshold", "1"], ["--threshold must be between 0 and 1"], id="threshold 1"),
    pytest.param("segment", ["--image-size", "40"], ["--image-size must be a multiple of 16"], id="U-Net size 40"),
    pytest.param("classify", ["--lr", "nan"], ["--lr"], id="learning rate NaN"),
    pytest.param("classify", ["--max-angle", "inf"], ["--max-angle"], id="rotation angle inf"),
])
def test_train_refuses_bad_flags(task, flags, words, a_file, tmp_path, capsys):
    assert_usage_error(train, [task, *flags, "--data", a_file, "--out", tmp_path / "run"], capsys, *words)
    assert not (tmp_path / "run").exists()


def test_train_without_a_task_is_a_usage_error(capsys):
    assert_usage_error(train, [], capsys, "the following arguments are required: task")


# ------------------------------------------------------------- train: --out, --config and --resume
def test_train_out_that_is_a_file_is_refused_and_kept(a_file, tmp_path, capsys):
    assert_one_line(train, ["classify", "--data", a_file, "--out", a_file, *TINY], capsys,
                    f"--out {a_file} is a file", "choose another --out")
    assert a_file.read_text() == "my notes\n"


@pytest.mark.parametrize("content, words", [
    pytest.param(None, ["cannot be read as JSON", "Is a directory", "config.json of a jaxmri run"], id="a folder"),
    pytest.param("[1, 2]", ["not a jaxmri run config", "config.json of a run written by"], id="not an object"),
    pytest.param('{"kind": "ClassifyConfig", "epochs": 2', ["cannot be read as JSON"], id="truncated"),
    pytest.param('{"kind": "ClassifyConfig", "colour": "red"}', ["unknown ClassifyConfig fields ['colour']",
                                                                 "another jaxmri version"], id="unknown field"),
    pytest.param('{"kind": "ClassifyConfig", "epochs": 0}', ["--epochs must be at least 1, got 0"], id="bad value"),
    pytest.param('{"kind": "ClassifyConfig", "epochs": "ten"}', ["epochs", "ten"], id="value of the wrong type"),
])
def test_train_refuses_a_bad_config_file(content, words, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.mkdir() if content is None else config.write_text(content)
    assert_one_line(train, ["classify", "--config", config, "--out", tmp_path / "run"], capsys, config, *words)
    assert not (tmp_path / "run").exists()


def test_train_refuses_the_other_tasks_config(unet_run, tmp_path, capsys):
    assert_usage_error(train, ["classify", "--config", unet_run / "config.json", "--out", tmp_path / "run"], capsys,
                       "is a segment run's config", f"python -m jaxmri.train segment --config {unet_run}/config.json")


@pytest.mark.parametrize("argv, words", [
    pytest.param(lambda run, tmp: ["classify", "--resume", tmp / "nowhere"], ["--resume", "no such run directory"],
                 id="missing"),
    pytest.param(lambda run, tmp: ["classify", "--resume", tmp], ["config.json: no such file"], id="not a run"),
    pytest.param(lambda run, tmp: ["segment", "--resume", run], ["--resume", "this is a ClassifyConfig run",
                                                                 "resume it with the other task"], id="other task"),
    pytest.param(lambda run, tmp: ["classify", "--resume", run, "--epochs", "3", "--lr", "0.1"],
                 ["other settings: epochs 1 (given 3); lr 0.001 (given 0.1)", "Drop those flags"], id="other settings"),
    pytest.param(lambda run, tmp: ["classify", "--resume", run, "--out", tmp / "elsewhere"], ["--resume", "drop --out"],
                 id="elsewhere"),
])
def test_train_resume_refuses_what_it_cannot_continue(argv, words, cnn_run, tmp_path, capsys):
    before = snapshot(cnn_run)
    assert_one_line(train, argv(cnn_run, tmp_path), capsys, *words)
    assert snapshot(cnn_run) == before and not (tmp_path / "elsewhere").exists()


def test_train_resume_with_config_is_a_usage_error(cnn_run, capsys):
    assert_usage_error(train, ["classify", "--resume", cnn_run, "--config", cnn_run / "config.json"], capsys,
                       "--resume continues a run with its own config; drop --config")


@pytest.mark.parametrize("kind, words", [
    pytest.param("a .pth file", ["is not a converted weights file", "python -m jaxmri.weights convert"], id="pth"),
    pytest.param("garbage", ["is not a readable safetensors file", "convert the weights again"], id="garbage"),
    pytest.param("foreign", ["was not written by `python -m jaxmri.weights convert`"], id="foreign safetensors"),
    pytest.param("a folder", ["ImageNet weights not found at", "--pretrained none"], id="a folder"),
])
def test_train_vgg19_refuses_bad_weights_before_training(kind, words, phantom_dir, tmp_path, capsys):
    path = {"a .pth file": TORCH_ZIP, "garbage": tmp_path / "w.safetensors", "foreign": tmp_path / "f.safetensors",
            "a folder": tmp_path / "weights"}[kind]
    if kind == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif kind == "foreign":
        save_file({"features.0.weight": np.zeros((4, 3, 3, 3), np.float32)}, path)
    elif kind == "a folder":
        path.mkdir()
    out = tmp_path / "run"
    assert_one_line(train, ["classify", "--arch", "vgg19", "--weights", path, "--data", phantom_dir, "--out", out,
                            *TINY], capsys, path, *words)
    assert not (out / "checkpoint").exists()


# ------------------------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("flags, words", [
    pytest.param(["--bootstrap", "10"], ["--bootstrap must be at least 100 resamples"], id="bootstrap 10"),
    pytest.param(["--folds", "two"], ["--folds", "invalid int value"], id="folds not a number"),
    pytest.param(["--tune", "lr"], ["--tune 'lr': write FIELD=V1,V2"], id="tune without values"),
    pytest.param(["--tune", "lr=fast"], ["--tune 'lr=fast': 'fast' is not a valid float"], id="tune not a number"),
    pytest.param(["--tune", "epochs=1.5"], ["'1.5' is not a valid int for epochs"], id="tune int field given 1.5"),
    pytest.param(["--tune", "seed=1,2"], ["'seed' is not a tunable field"], id="tune the seed"),
    pytest.param(["--resume", "runs/x"], ["resumes by running the same command again", "drop --resume"], id="resume"),
    pytest.param(["--tune", "tta=maybe"], ["--tune", "maybe"], id="tune a switch to maybe"),
])
def test_evaluate_refuses_bad_flags(flags, words, a_file, tmp_path, capsys):
    assert_usage_error(evaluate, ["classify", "--data", a_file, "--out", tmp_path / "cv", *TINY, *flags], capsys, *words)
    assert not (tmp_path / "cv").exists()


@pytest.mark.parametrize("point", [
    pytest.param("arch=resnet", id="tune an unknown choice"),
    pytest.param("epochs=0,1", id="tune a value the config refuses"),
])
def test_evaluate_refuses_a_grid_point_the_config_refuses(point, phantom_dir, tmp_path, capsys):
    assert_usage_error(evaluate, ["classify", "--data", phantom_dir, "--out", tmp_path / "cv", "--folds", "2", *TINY,
                                  "--tune", point], capsys, "--tune")


@pytest.mark.parametrize("kind, words", [
    pytest.param("a file", ["is a file, not a directory", "choose another --out"], id="out is a file"),
    pytest.param("foreign", ["already exists and is not empty", "--overwrite"], id="out holds other files"),
    pytest.param("corrupt", ["cv_config.json: cannot be read", "pass --overwrite to start again"],
                 id="out with a corrupt cv_config.json"),
])
def test_evaluate_refuses_an_out_it_cannot_use_and_keeps_it(kind, words, phantom_dir, tmp_path, capsys):
    out = tmp_path / "cv"
    if kind == "a file":
        out.write_text("mine")
    else:
        out.mkdir()
        (out / ("cv_config.json" if kind == "corrupt" else "mine.txt")).write_text('{"folds": 3')
    before = snapshot(tmp_path)
    assert_one_line(evaluate, ["classify", "--data", phantom_dir, "--out", out, "--folds", "2", *TINY], capsys, out,
                    *words)
    assert snapshot(tmp_path) == before


def test_evaluate_refuses_a_bad_image_in_one_line(data, tmp_path, capsys):
    (data / "no" / "healthy_003.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert_one_line(evaluate, ["classify", "--data", data, "--out", tmp_path / "cv", "--folds", "2", *TINY], capsys,
                    data / "no" / "healthy_003.png", "truncated PNG", "--skip-unreadable")
    assert not list((tmp_path / "cv").glob("fold*"))


# -------------------------------------------------------------------------------- predict: --run
def _spoil_run(run: Path, kind: str) -> list[str]:
    if kind == "config.json is not JSON":
        (run / "config.json").write_text("{oops")
        return ["config.json: cannot be read as JSON"]
    if kind == "config.json without a kind":
        (run / "config.json").write_text('{"epochs": 1}')
        return ["config.json: not a jaxmri run config"]
    if kind == "config.json with an unknown field":
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "colour": "red"}))
        return ["unknown ClassifyConfig fields ['colour']"]
    if kind == "config.json with a bad value":
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "batch_size": -4}))
        return ["config.json: --batch-size must be at least 1"]
    if kind == "no config.json":
        (run / "config.json").unlink()
        return ["no config.json, so not a jaxmri run directory"]
    if kind == "no checkpoint":
        shutil.rmtree(run / "checkpoint")
        return ["no checkpoint/", "train it again"]
    if kind == "an empty checkpoint":
        shutil.rmtree(run / "checkpoint")
        (run / "checkpoint").mkdir()
        return ["checkpoint/ does not match the model"]
    if kind == "a checkpoint of garbage":
        for p in (run / "checkpoint").rglob("*"):
            if p.is_file():
                p.write_bytes(b"garbage")
        return ["checkpoint/ does not match the model"]
    if kind == "no split.json":
        (run / "split.json").unlink()
        return ["split.json: missing or not written by this jaxmri version", "retrain the run"]
    if kind == "split.json not an object":
        (run / "split.json").write_text("[1, 2, 3]")
        return ["split.json: missing or not written by this jaxmri version"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "config.json is not JSON", "config.json without a kind", "config.json with an unknown field",
    "config.json with a bad value", "no config.json", "no checkpoint", "an empty checkpoint", "a checkpoint of garbage",
    "no split.json", "split.json not an object"])
def test_predict_refuses_a_broken_run_directory(kind, cnn_run, phantom_dir, tmp_path, capsys):
    run = Path(shutil.copytree(cnn_run, tmp_path / "run"))
    words = _spoil_run(run, kind)
    assert_one_line(predict, ["--run", run, "--out", tmp_path / "p", phantom_dir / "yes"], capsys, run, *words)
    assert not (tmp_path / "p").exists()


def test_predict_refuses_a_file_as_run(phantom_dir, tmp_path, capsys):
    image = phantom_dir / "yes" / "tumor_000.png"
    assert_one_line(predict, ["--run", image, "--out", tmp_path / "p", image], capsys,
                    f"--run {image} is a file, not a run directory", "config.json and checkpoint/")


# -------------------------------------------------------------------- predict: flags and inputs
def test_predict_out_that_is_a_file_is_refused_and_kept(cnn_run, phantom_dir, a_file, capsys):
    assert_one_line(predict, ["--run", cnn_run, "--out", a_file, phantom_dir / "yes"], capsys,
                    f"--out {a_file} is a file", "choose another --out")
    assert a_file.read_text() == "my notes\n"


@pytest.mark.parametrize("kind, words", [
    pytest.param("missing", ["--localisation", "no such file or folder"], id="missing"),
    pytest.param("bad json", ["bad.json", "not valid JSON", "re-export"], id="bad JSON"),
    pytest.param("not coco", ["other.json", "neither COCO", "Labelbox"], id="JSON of another kind"),
    pytest.param("stray file", ["mask 'notes.txt'", "is not a mask image", "move it out"], id="stray file in masks"),
])
def test_predict_refuses_a_bad_localisation_source_before_writing(kind, words, cnn_run, phantom_dir, tmp_path, capsys):
    source = {"missing": tmp_path / "absent.json", "bad json": tmp_path / "bad.json", "not coco": tmp_path / "other.json",
              "stray file": tmp_path / "masks"}[kind]
    if kind == "bad json":
        source.write_text('{"images": [')
    elif kind == "not coco":
        source.write_text('{"hello": 1}')
    elif kind == "stray file":
        shutil.copytree(phantom_dir / "masks", source)
        (source / "notes.txt").write_text("x")
    assert_one_line(predict, ["--run", cnn_run, "--out", tmp_path / "p", "--no-progress", "--localisation", source,
                              phantom_dir / "yes"], capsys, *words)
    assert not (tmp_path / "p").exists()


def test_predict_localisation_on_a_unet_run_is_refused(unet_run, phantom_dir, tmp_path, capsys):
    assert_one_line(predict, ["--run", unet_run, "--out", tmp_path / "p", "--localisation", phantom_dir / "masks",
                              phantom_dir / "yes"], capsys, "is a U-Net (segment) run", "--localisation needs a classifier")
    assert not (tmp_path / "p").exists()


def test_predict_localisation_masks_that_match_no_input_keep_the_predictions(cnn_run, phantom_dir, tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "somebody_else.png"), np.full((20, 20), 255, np.uint8))
    out = tmp_path / "p"
    assert_one_line(predict, ["--run", cnn_run, "--out", out, "--no-progress", "--localisation", masks,
                              phantom_dir / "no"], capsys, masks, "no mask matches an input image's file name")
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 8 and not (out / "localisation.json").exists()


@pytest.mark.parametrize("argv, words", [
    pytest.param(lambda run, tmp: ["--run", run, "--out", tmp / "p", "--batch-size", "lots", "x.png"],
                 ["--batch-size", "invalid int value"], id="batch size not a number"),
    pytest.param(lambda run, tmp: ["--out", tmp / "p", "x.png"], ["required: --run"], id="no --run"),
    pytest.param(lambda run, tmp: ["--run", run, "x.png"], ["required: --out"], id="no --out"),
    pytest.param(lambda run, tmp: ["--run", run, "--out", tmp / "p"], ["required: INPUT"], id="no inputs"),
])
def test_predict_usage_errors(argv, words, cnn_run, tmp_path, capsys):
    assert_usage_error(predict, argv(cnn_run, tmp_path), capsys, *words)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("kind, words", [
    pytest.param("broken link", ["no such file or folder", "pass image files"], id="a broken link"),
    pytest.param("folder named .png", ["no images found", "pass image files or folders"], id="a folder named x.png"),
    pytest.param("only text files", ["no images found", ".png"], id="a folder of text files"),
])
def test_predict_refuses_inputs_that_hold_no_image(kind, words, cnn_run, tmp_path, capsys):
    given = tmp_path / {"broken link": "gone.png", "folder named .png": "scans.png", "only text files": "notes"}[kind]
    if kind == "broken link":
        given.symlink_to(tmp_path / "deleted.png")
    else:
        given.mkdir()
        (given / "report.txt").write_text("no scans here")
    assert_one_line(predict, ["--run", cnn_run, "--out", tmp_path / "p", given], capsys, given, *words)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("name, content, reason", [
    pytest.param("report.txt", lambda png, rgb: b"not an image", "not an image file ('.txt'", id="a text file by name"),
    pytest.param("damaged.jpg", lambda png, rgb: damaged_jpeg(rgb), "damaged or truncated JPEG", id="damaged JPEG scan"),
    pytest.param("crc.png", lambda png, rgb: crc_broken_png(png), "cannot be decoded (libpng error: ",
                 id="PNG with damaged pixel data"),
    pytest.param("cut.bmp", lambda png, rgb: cv2.imencode(".bmp", rgb)[1].tobytes()[:500], "truncated BMP",
                 id="truncated BMP"),
    pytest.param("renamed.png", lambda png, rgb: b"GIF89a" + bytes(40), "not an image (the file does not start like",
                 id="a GIF named .png"),
])
def test_predict_gives_a_bad_image_an_error_record_and_one_line(name, content, reason, cnn_run, phantom_dir, tmp_path,
                                                                capfd):
    """Status 1, the good image still predicted; captured at the file descriptor, so libjpeg's and libpng's
    own messages would show too."""
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(phantom_dir / "yes" / "tumor_000.png", scans / "a_good.png")
    (scans / name).write_bytes(content(phantom_png(phantom_dir), phantom_rgb(phantom_dir)))
    out = tmp_path / "p"
    assert_one_line(predict, ["--run", cnn_run, "--out", out, "--no-progress", scans / "a_good.png", scans / name],
                    capfd, f"error: {scans / name}: {reason}", status=1)
    good, bad = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert "label" in good and bad["file"] == str(scans / name) and reason in bad["error"]


# ------------------------------------------------------------------------------------------- reproduce
def _reproduce_case(kind: str, phantom_dir: Path, tmp_path: Path):
    """(argv, words) of one bad reproduce input; every argv has an --out under tmp_path."""
    out = tmp_path / "report"
    base = ["--data", phantom_dir, "--masks", phantom_dir / "masks", "--out", out]
    if kind == "--masks without --data":
        return ["--masks", phantom_dir / "masks", "--out", out], ["--masks needs --data"]
    if kind == "missing --masks":
        return ["--data", phantom_dir, "--masks", tmp_path / "absent.json", "--out", out], [
            "--masks", "absent.json: no such file or folder"]
    if kind == "--data is a file":
        return ["--data", phantom_dir / "yes" / "tumor_000.png", "--out", out], ["tumor_000.png: no such folder"]
    if kind == "--out is a file":
        out.write_text("mine")
        return base, ["is a file, not a directory", "choose another --out"]
    if kind == "--out holds other files":
        out.mkdir()
        (out / "notes.md").write_text("mine")
        return base, ["already exists and is not empty", "--overwrite"]
    if kind == "--out with a corrupt reproduce.json":
        out.mkdir()
        (out / "reproduce.json").write_text('{"budget": ')
        return base, ["reproduce.json: cannot be read", "--overwrite"]
    if kind == "--out holding another plan":
        out.mkdir()
        (out / "reproduce.json").write_text(json.dumps({"budget": "paper", "experiments": []}))
        return base, ["holds a reproduction with other settings (budget, experiments)", "--overwrite"]
    if kind == "--masks with bad JSON":
        (tmp_path / "cut.json").write_text('{"images": [], "annotations": [')
        return ["--data", phantom_dir, "--masks", tmp_path / "cut.json", "--out", out], ["cut.json", "not valid JSON"]
    if kind == "--masks naming other images":
        (tmp_path / "coco.json").write_text(coco([{"id": 1, "file_name": "Y1.jpg"}],
                                                 [{"id": 1, "image_id": 1, "segmentation": [SQUARE]}]))
        return ["--data", phantom_dir, "--masks", tmp_path / "coco.json", "--out", out], ["'Y1.jpg'", "matches none"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "--masks without --data", "missing --masks", "--data is a file", "--out is a file", "--out holds other files",
    "--out with a corrupt reproduce.json", "--out holding another plan", "--masks with bad JSON",
    "--masks naming other images"])
def test_reproduce_refuses_bad_input_before_the_first_experiment(kind, phantom_dir, tmp_path, capsys):
    argv, words = _reproduce_case(kind, phantom_dir, tmp_path)
    before = snapshot(tmp_path)
    assert_one_line(reproduce, argv, capsys, *words)
    after = snapshot(tmp_path)
    assert not (tmp_path / "report" / "runs").exists()
    assert set(after) - set(before) <= {"report/reproduce.json"}  # at most the plan, written before the check
    assert all(after[name] == content for name, content in before.items())


def test_reproduce_refuses_corrupt_weights_before_the_first_experiment(phantom_dir, tmp_path, capsys, monkeypatch):
    import jaxmri.evaluation.reproduction as reproduction

    def started(*args, **kwargs):
        raise RuntimeError("an experiment started before --weights was checked")

    monkeypatch.setattr(reproduction, "run_experiment", started)
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 64)
    assert_one_line(reproduce, ["--data", phantom_dir, "--masks", phantom_dir / "masks", "--weights",
                                tmp_path / "w.safetensors", "--out", tmp_path / "report"], capsys, "w.safetensors")


def test_reproduce_unknown_budget_is_a_usage_error(capsys):
    assert_usage_error(reproduce, ["--budget", "overnight"], capsys, "--budget", "invalid choice: 'overnight'")


# --------------------------------------------------------------------------------------------- weights
def _weights_source(kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "vgg19.pth"
    if kind == "a text file":
        path.write_text("hello")
        return path, ["neither a PyTorch .pth nor a Keras .h5 file", "vgg19-dcbb9e9d.pth"]
    if kind == "an empty file":
        path.write_bytes(b"")
        return path, ["neither a PyTorch .pth nor a Keras .h5 file"]
    if kind == "a folder":
        path.mkdir()
        return path, ["is a folder", "file inside it"]
    if kind == "a zip that is not torch's":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("readme.txt", "hi")
        return path, ["not one written by torch.save", "PyTorch .pth file"]
    if kind == "a cut zip .pth":
        data = TORCH_ZIP.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, ["is not a readable PyTorch state_dict", "download it again"]
    if kind == "a cut legacy .pth":
        data = TORCH_LEGACY.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, ["ends early", "download it again"]
    if kind == "a pickled list":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
        return path, ["neither a zip nor a legacy torch.save file"]
    if kind == "a zip .pth holding a list":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", pickle.dumps([1, 2, 3], protocol=2))
        return path, ["holds a list, not a state_dict", "model.state_dict()"]
    if kind == "an HDF5 header and garbage":
        path = tmp_path / "vgg19.h5"
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
        return path, ["is not a readable Keras weights file"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "a text file", "an empty file", "a folder", "a zip that is not torch's", "a cut zip .pth", "a cut legacy .pth",
    "a pickled list", "a zip .pth holding a list", "an HDF5 header and garbage"])
def test_weights_convert_refuses_a_bad_source(kind, tmp_path, capsys):
    if kind.startswith("an HDF5"):
        pytest.importorskip("h5py")
    source, words = _weights_source(kind, tmp_path)
    out = tmp_path / "w" / "vgg19.safetensors"
    assert_one_line(weights, ["convert", source, "--out", out], capsys, source, *words)
    assert not out.exists() and not list(tmp_path.glob("w/*.partial"))


@pytest.mark.parametrize("out, words", [
    pytest.param("vgg19.npz", ["must end in .safetensors"], id="not .safetensors"),
    pytest.param("notes.txt/vgg19.safetensors", ["cannot create its folder", "choose another --out"],
                 id="under a file"),
    pytest.param("existing.safetensors", ["already exists", "pass --overwrite"], id="already there"),
])
def test_weights_convert_refuses_an_out_it_cannot_write_and_keeps_what_is_there(out, words, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "existing.safetensors").write_bytes(b"my converted weights")
    before = snapshot(tmp_path)
    assert_one_line(weights, ["convert", TORCH_ZIP, "--out", tmp_path / out], capsys, "--out", *words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind, words", [
    pytest.param("cache is a file", ["--cache-dir", "cannot be used as a folder", "pass another --cache-dir"],
                 id="cache dir is a file"),
    pytest.param("bad url", ["Could not download not-a-url", "download that file by hand"], id="not a URL"),
    pytest.param("out exists", ["already exists", "pass --overwrite"], id="out already there"),
])
def test_weights_download_refuses_what_it_cannot_do(kind, words, tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "vgg19.safetensors"
    url = TORCH_ZIP.resolve().as_uri()  # nothing may be fetched from it: every case stops first
    if kind == "cache is a file":
        cache.write_text("mine")
    elif kind == "bad url":
        url = "not-a-url"
    else:
        out.write_bytes(b"my converted weights")
    before = snapshot(tmp_path)
    assert_one_line(weights, ["download", "vgg19", "--url", url, "--cache-dir", cache, "--out", out], capsys, *words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, words", [
    pytest.param([], ["required: command"], id="no command"),
    pytest.param(["download", "resnet50"], ["invalid choice: 'resnet50'"], id="unknown model"),
    pytest.param(["convert"], ["required: PATH"], id="convert without a file"),
])
def test_weights_usage_errors(argv, words, capsys):
    assert_usage_error(weights, argv, capsys, *words)


def test_weights_convert_overwrite_replaces_the_old_file(tmp_path, capsys):
    out = tmp_path / "vgg19.safetensors"
    out.write_bytes(b"an old file")
    assert weights(["convert", str(TORCH_LEGACY), "--out", str(out), "--overwrite"]) == 0
    assert read_weights(out)[1]["source_format"] == "pth-legacy"
    assert "pth-legacy" in capsys.readouterr().out


# ================================================================= odd but valid input must work
def _write_odd(folder: Path, rgb: np.ndarray) -> dict[str, tuple[int, int]]:
    """Every odd-but-valid image, in ``folder``; returns {file name: (H, W) that read_image gives}."""
    h, w = rgb.shape[:2]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(folder / "all black.png"), np.zeros((h, w, 3), np.uint8))
    cv2.imwrite(str(folder / "one pixel.png"), np.full((1, 1, 3), 180, np.uint8))
    cv2.imwrite(str(folder / "sixteen bit.png"), gray.astype(np.uint16) * 16)  # 12-bit values in a 16-bit PNG
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([bgr, np.full((h, w), 255, np.uint8)]))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated.save(folder / "exif rotated.jpg", exif=exif)
    cv2.imwrite(str(folder / "huge.jpg"), cv2.resize(bgr, (6000, 6000), interpolation=cv2.INTER_LINEAR))
    cv2.imwrite(str(folder / "a name with  spaces (1).png"), bgr)
    cv2.imwrite(str(folder / "scan é ñ 脑 ü.png"), bgr)
    # libjpeg warns "Corrupt JPEG data: 2 extraneous bytes before marker 0xd9" and decodes every pixel.
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    (folder / "extra bytes before the end marker.jpg").write_bytes(jpeg[:-2] + b"\x00\x00" + jpeg[-2:])
    sizes = {p.name: (h, w) for p in folder.iterdir()}
    sizes.update({"one pixel.png": (1, 1), "exif rotated.jpg": (w, h), "huge.jpg": (6000, 6000)})
    return sizes


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory, phantom_dir) -> tuple[Path, dict[str, tuple[int, int]]]:
    """``root/yes/`` holds every odd-but-valid image; ``root/no/`` two plain phantoms (a dataset needs two classes)."""
    root = tmp_path_factory.mktemp("odd") / "data dïr"
    (root / "yes").mkdir(parents=True)
    (root / "no").mkdir()
    for p in sorted((phantom_dir / "no").iterdir())[:2]:
        shutil.copy(p, root / "no")
    return root, _write_odd(root / "yes", phantom_rgb(phantom_dir, 2))


ODD_NAMES = ["all black.png", "one pixel.png", "sixteen bit.png", "rgba.png", "palette.png", "cmyk.jpg",
             "exif rotated.jpg", "huge.jpg", "a name with  spaces (1).png", "scan é ñ 脑 ü.png",
             "extra bytes before the end marker.jpg"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_but_valid_images_are_read_quietly(name, odd_images, capfd):
    root, sizes = odd_images
    capfd.readouterr()
    image = read_image(root / "yes" / name)
    assert image.dtype == np.uint8 and image.shape == (*sizes[name], 3) and image.flags.c_contiguous
    assert capfd.readouterr().err == ""  # not even a libjpeg warning
    if name == "all black.png":
        assert image.max() == 0
    if name in ("sixteen bit.png", "rgba.png", "palette.png", "cmyk.jpg"):
        assert image.max() > 128  # the brain is there, not a black or a washed-out image


def test_odd_but_valid_images_load_as_a_dataset(odd_images):
    root, sizes = odd_images
    data = load_image_folder(root, image_size=32, progress=False)
    assert len(data) == len(ODD_NAMES) + 2 and not data.skipped
    assert data.images.shape == (len(ODD_NAMES) + 2, 32, 32, 3)
    for path, size in zip(data.paths, data.sizes):
        if path.startswith("yes/"):
            assert tuple(size) == sizes[path[4:]], path


def test_predict_handles_every_odd_but_valid_image(odd_images, cnn_run, unet_run, tmp_path, capsys):
    root, sizes = odd_images
    explained, masks = tmp_path / "cam", tmp_path / "masks"
    assert predict(["--run", str(cnn_run), "--out", str(explained), "--explain", "--no-progress", str(root / "yes")]) == 0
    assert predict(["--run", str(unet_run), "--out", str(masks), "--no-progress", str(root / "yes")]) == 0
    assert "error" not in capsys.readouterr().err
    for out in (explained, masks):
        records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert sorted(Path(r["file"]).name for r in records) == sorted(ODD_NAMES)
        for record in records:
            key = "gradcam" if out == explained else "mask"
            written = cv2.imread(str(out / record[key]), cv2.IMREAD_UNCHANGED)  # the output is at the input's size
            assert written.shape[:2] == sizes[Path(record["file"]).name], record


def test_predict_localisation_on_a_few_of_the_annotated_images(cnn_run, phantom_dir, tmp_path):
    """Annotations of images that were not given are left out, not refused."""
    out = tmp_path / "p"
    files = [str(phantom_dir / "yes" / f"tumor_00{i}.png") for i in (1, 4)]
    assert predict(["--run", str(cnn_run), "--out", str(out), "--no-progress", "--localisation",
                    str(phantom_dir / "masks"), *files]) == 0
    scores = json.loads((out / "localisation.json").read_text())
    assert scores["images"] == 2 and [Path(r["file"]).name for r in scores["per_image"]] == ["tumor_001.png",
                                                                                             "tumor_004.png"]


def test_odd_but_valid_masks_load(phantom_dir, tmp_path):
    """16-bit (upper-case .PNG), RGBA, JPEG and BMP masks, and a COCO file with a string image id, a path in
    its file name and sizes written as 218.0, are all masks."""
    from jaxmri.data.masks import load_masks

    stems = [f"tumor_{i:03d}" for i in range(4)]
    sizes = {s: image_hw(phantom_dir, s) for s in stems}
    folder = tmp_path / "masks"
    folder.mkdir()
    for stem, kind in zip(stems, ("16", "rgba", "jpeg", "bmp")):
        mask = (cv2.imread(str(phantom_dir / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        if kind == "16":
            cv2.imwrite(str(folder / f"{stem}.PNG"), mask.astype(np.uint16) * 1000)
        elif kind == "rgba":
            cv2.imwrite(str(folder / f"{stem}.png"), np.dstack([mask * 255] * 3 + [np.full_like(mask, 255)]))
        elif kind == "jpeg":
            cv2.imwrite(str(folder / f"{stem}.jpg"), mask * 255, [cv2.IMWRITE_JPEG_QUALITY, 90])
        else:
            cv2.imwrite(str(folder / f"{stem}.bmp"), mask * 255)
    masks = load_masks(folder, sizes)
    assert sorted(masks) == stems and all(masks[s].shape == sizes[s] and masks[s].any() for s in stems)
    h, w = sizes["tumor_000"]
    (tmp_path / "coco.json").write_text(coco([{"id": "a", "file_name": "x/TUMOR_000.JPG", "height": float(h),
                                               "width": float(w)}], [{"id": 1, "image_id": "a", "segmentation": [SQUARE]}]))
    assert int(load_masks(tmp_path / "coco.json", sizes)["tumor_000"].sum()) == 30 * 30
