"""load_image_folder / scan_class_folders on phantoms, messy folders, bad files and the real set."""

from __future__ import annotations

import shutil
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from jaxmri.data.dataset import ImageSet, load_image_folder, scan_class_folders
from jaxmri.data.duplicates import count_groups
from jaxmri.data.images import read_image
from jaxmri.data.phantom import make_phantom
from jaxmri.data.split import grouped_stratified_split
from jaxmri.errors import DataError


def test_phantom_folder_loads(phantom_dir):
    data = load_image_folder(phantom_dir, image_size=48, progress=False)
    assert isinstance(data, ImageSet) and len(data) == 20
    assert data.class_names == ("no", "yes")
    assert np.bincount(data.labels).tolist() == [8, 12]
    assert data.images.shape == (20, 48, 48, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == data.boxes.dtype == data.sizes.dtype == data.groups.dtype == np.int32
    assert data.paths[0] == "no/healthy_000.png" and data.paths[-1] == "yes/tumor_011.png"
    assert list(data.paths) == sorted(data.paths)
    assert not any(p.startswith("masks/") for p in data.paths)  # masks/ is not a class
    assert count_groups(data.groups) == (20, 0, 0)  # no phantom is a copy of another
    for path, box, size in zip(data.paths, data.boxes, data.sizes):
        height, width = read_image(phantom_dir / path).shape[:2]
        assert tuple(size) == (height, width)
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (x1 - x0) * (y1 - y0) < height * width  # the dark border was cropped away


def test_gray_channel_option(phantom_dir):
    data = load_image_folder(phantom_dir, image_size=32, channels=1, progress=False)
    assert data.images.shape == (20, 32, 32, 1)
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(phantom_dir, channels=2)


def test_progress_bar_goes_to_stderr(phantom_dir, capsys):
    load_image_folder(phantom_dir, image_size=16, progress=True)
    captured = capsys.readouterr()
    assert "loading images" in captured.err and captured.out == ""


def _messy_folder(root):
    """Every image mode, odd names, and duplicates: 8 files in yes/, 3 in no/."""
    images, _, _ = make_phantom(4, 3, seed=3)
    yes, no = root / "yes", root / "no"
    yes.mkdir(parents=True)
    no.mkdir()
    gray = images[0][:, :, 0]
    Image.fromarray(gray).save(yes / "gray L.png")
    Image.fromarray(images[1]).save(yes / "Y 16.JPG", quality=95)
    Image.fromarray(np.dstack([images[2], np.full(images[2].shape[:2], 255, np.uint8)]), "RGBA").save(yes / "rgba.PNG")
    Image.fromarray(images[3]).convert("P").save(yes / "palette.png")
    cv2.imwrite(str(yes / "deep16.png"), images[0][:, :, 0].astype(np.uint16) * 16)
    shutil.copy(yes / "gray L.png", yes / "gray L copy.png")  # exact duplicate
    small = cv2.resize(images[1], None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    Image.fromarray(small).save(yes / "Y16 resized.jpeg")  # near duplicate
    Image.fromarray(images[1]).save(yes / "Y16.tif")  # same picture, another format
    for i in range(3):
        cv2.imwrite(str(no / f"no {i}.bmp"), images[4 + i])
    (root / ".hidden").mkdir()
    (yes / ".DS_Store").write_bytes(b"\x00junk")
    (no / "Thumbs.db").write_bytes(b"\x00junk")
    return root


def test_messy_folder_every_mode_and_duplicates(tmp_path):
    data = load_image_folder(_messy_folder(tmp_path / "messy"), image_size=40, progress=False)
    assert len(data) == 11 and data.class_names == ("no", "yes")
    assert data.images.shape == (11, 40, 40, 3) and data.images.dtype == np.uint8
    by_name = dict(zip(data.paths, data.groups))
    assert by_name["yes/gray L.png"] == by_name["yes/gray L copy.png"] == by_name["yes/deep16.png"]
    assert by_name["yes/Y 16.JPG"] == by_name["yes/Y16 resized.jpeg"] == by_name["yes/Y16.tif"]
    assert len({by_name[f"no/no {i}.bmp"] for i in range(3)}) == 3
    assert count_groups(data.exact_groups) == (10, 1, 2)
    summary = data.summary()
    assert "11 images" in summary and "no (label 0): 3" in summary and "yes (label 1): 8" in summary
    assert "1 group of byte-identical files covering 2 files" in summary
    assert "skipped 0 unreadable files" in summary
    assert f"{count_groups(data.groups)[0]} groups for 11 images" in summary


def _write_bad_files(class_dir):
    png = cv2.imencode(".png", np.full((30, 30), 128, np.uint8))[1].tobytes()
    jpeg = cv2.imencode(".jpg", np.full((30, 30), 128, np.uint8))[1].tobytes()
    (class_dir / "empty.jpg").write_bytes(b"")
    (class_dir / "notes.jpg").write_text("not an image\n")
    (class_dir / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (class_dir / "cut.png").write_bytes(png[: len(png) // 2])
    (class_dir / "readme.txt").write_text("labels by Dr. X\n")
    return {"empty.jpg": "empty", "notes.jpg": "not an image", "cut.jpg": "truncated JPEG",
            "cut.png": "truncated PNG", "readme.txt": "not an image file"}


def test_bad_files_stop_the_run_with_one_line_each(tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(_messy_folder(tmp_path / "src"), root)
    expected = _write_bad_files(root / "yes")
    with pytest.raises(DataError) as info:
        load_image_folder(root, image_size=16, progress=False)
    lines = str(info.value).splitlines()
    assert len(lines) == len(expected) + 1
    for line, (name, reason) in zip(lines, sorted(expected.items())):
        assert line.startswith(f"yes/{name}: ") and reason in line
    assert "--skip-unreadable" in lines[-1] and "5 of 16 files" in lines[-1]


def test_skip_unreadable_keeps_the_rest(tmp_path, capsys):
    root = tmp_path / "bad"
    shutil.copytree(_messy_folder(tmp_path / "src"), root)
    expected = _write_bad_files(root / "yes")
    data = load_image_folder(root, image_size=16, skip_unreadable=True, progress=False)
    assert len(data) == 11
    assert [path for path, _ in data.skipped] == [f"yes/{n}" for n in sorted(expected)]
    assert all(expected[path[4:]] in reason for path, reason in data.skipped)
    assert "skipped 5 unreadable files" in capsys.readouterr().err
    assert "skipped 5 unreadable files:" in data.summary() and "yes/cut.png: truncated PNG" in data.summary()


def test_skipping_every_file_of_a_class_is_an_error(tmp_path):
    root = _messy_folder(tmp_path / "m")
    for p in (root / "no").iterdir():
        p.write_bytes(b"")
    with pytest.raises(DataError, match="no/: no readable images left"):
        load_image_folder(root, image_size=16, skip_unreadable=True, progress=False)


def test_scan_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_class_folders(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        scan_class_folders(tmp_path / "file.png")
    with pytest.raises(DataError, match=r"no class folders found \(it holds 1 loose file;"):
        scan_class_folders(tmp_path)
    (tmp_path / "yes").mkdir()
    (tmp_path / "no").mkdir()
    (tmp_path / "yes" / "nested").mkdir()
    (tmp_path / "yes" / "a.png").write_bytes(b"x")
    with pytest.raises(DataError) as info:
        scan_class_folders(tmp_path)
    lines = str(info.value).splitlines()
    assert lines == ["no/: class folder has no files; add images or remove the folder",
                     "yes/nested: folder inside a class folder; move its images up into the class folder or remove it"]


def test_class_mapping_yes_no_first_then_sorted_and_printed(tmp_path, capsys):
    for name in ("yes", "maybe", "no", "Abnormal"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"x")
    paths, labels, names = scan_class_folders(tmp_path)
    assert names == ("no", "yes", "Abnormal", "maybe")
    assert [p.parent.name for p in paths] == ["Abnormal", "maybe", "no", "yes"]  # sorted by folder
    assert labels.tolist() == [2, 3, 0, 1]
    assert "no=0, yes=1, Abnormal=2, maybe=3" in capsys.readouterr().err


def test_other_class_names_sorted(tmp_path):
    for name in ("meningioma", "glioma"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"x")
    assert scan_class_folders(tmp_path)[2] == ("glioma", "meningioma")


@pytest.mark.realdata
def test_real_dataset(real_data_dir):
    start = time.perf_counter()
    data = load_image_folder(real_data_dir / "brain_tumor_dataset", image_size=224, progress=False)
    seconds = time.perf_counter() - start
    assert seconds < 30
    assert len(data) == 253 and data.class_names == ("no", "yes")
    assert np.bincount(data.labels).tolist() == [98, 155]
    assert data.images.shape == (253, 224, 224, 3)
    assert len({tuple(s) for s in data.sizes}) == 184
    assert np.all(data.boxes[:, 2] <= data.sizes[:, 1]) and np.all(data.boxes[:, 3] <= data.sizes[:, 0])
    # 22 groups of byte-identical files (47 files, 228 distinct contents), as the data README says.
    assert count_groups(data.exact_groups) == (228, 22, 47)
    # Near-duplicates join some more, but do not merge everything, and never across labels.
    n_groups, _, _ = count_groups(data.groups)
    assert 150 < n_groups < 228
    assert np.bincount(data.groups).max() <= 10
    for g in np.unique(data.groups):
        assert len(np.unique(data.labels[data.groups == g])) == 1
    # Annotated byte-identical pairs (annotations README) share a group.
    group_of = {p.split("/")[-1].split(".")[0]: g for p, g in zip(data.paths, data.groups)}
    for a, b in [("Y10", "Y37"), ("Y14", "Y17"), ("Y15", "Y34"), ("Y30", "Y38")]:
        assert group_of[a] == group_of[b]
    split = grouped_stratified_split(data.labels, data.groups, seed=0)
    part_of = np.empty(len(data), object)
    for part, idx in split.items():
        part_of[idx] = part
    for g in np.unique(data.groups):
        assert len(set(part_of[data.groups == g])) == 1
    print(f"\nreal set: loaded in {seconds:.2f} s\n{data.summary()}")
