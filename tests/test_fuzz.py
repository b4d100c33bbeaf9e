"""Fuzzing the file readers with hypothesis: the image decoder and every annotation parser.

The property, for random bytes, damaged real files and random JSON alike: a reader either returns a
valid result (``uint8 (H, W, 3)`` RGB; ``{stem: uint8 (H, W) in {0, 1}}`` at the image's own size) or
raises the package's own error (``jaxmri.errors.JaxmriError``: ``BadImageError``, ``MaskError``) with a
one-line message. Anything else (``TypeError``, ``OverflowError``, ``cv2.error``, ``RecursionError``...)
is a bug that a user would meet as a traceback. The JSON strategies mix well-formed entries with values
of every JSON type in every place, so the parsers' type checks are reached, not just ``json.loads``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxmri.data.images import IMAGE_EXTENSIONS, check_image_bytes, decode_image_bytes, read_image
from jaxmri.data.masks import load_coco, load_labelbox, load_masks, load_png_folder
from jaxmri.errors import BadImageError, JaxmriError, MaskError

FUZZ = settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
SIZES = {"y16": (20, 30), "y2": (12, 10), "1 no": (16, 16)}


def assert_image(image) -> None:
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1 and image.flags.c_contiguous


def assert_masks(masks, sizes=SIZES) -> None:
    assert isinstance(masks, dict)
    for stem, mask in masks.items():
        assert stem in sizes and isinstance(mask, np.ndarray) and mask.dtype == np.uint8
        assert mask.shape == sizes[stem] and set(np.unique(mask).tolist()) <= {0, 1}


def valid_or_own_error(read, check, error=JaxmriError):
    """``check(read())``, or the package's own error with a one-line message; anything else escapes."""
    try:
        result = read()
    except error as err:
        assert str(err) and "\n" not in str(err), str(err)
        return None
    check(result)
    return result


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------------------- images
SIGNATURES = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b""]
TRAILERS = [b"", b"\xff\xd9", b"IEND\xaeB`\x82", b"\xff\xda\x00\xff\xd9"]


def _encoded(seed: int, height: int, width: int, mode: str, ext: str) -> bytes:
    rng = np.random.default_rng(seed)
    depth = np.uint16 if mode.endswith("16") and ext in (".png", ".tif") else np.uint8
    channels = {"gray": 1, "gray16": 1, "rgb": 3, "rgb16": 3, "rgba": 4}[mode]
    if ext == ".jpg" and channels == 4:
        channels = 3
    array = rng.integers(0, np.iinfo(depth).max, (height, width, channels), endpoint=True).astype(depth)
    return cv2.imencode(ext, array)[1].tobytes()


encoded_images = st.builds(_encoded, st.integers(0, 2**16), st.integers(1, 40), st.integers(1, 40),
                           st.sampled_from(["gray", "gray16", "rgb", "rgb16", "rgba"]),
                           st.sampled_from([".png", ".jpg", ".bmp", ".tif"]))


@st.composite
def damaged(draw, data):
    """A valid encoding, then some of: bytes overwritten, bytes cut out, the file cut short, a trailer added."""
    data = bytearray(draw(data))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data)))
        del data[start:start + draw(st.integers(0, 64))]
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.sampled_from(TRAILERS))


@FUZZ
@given(st.sampled_from(SIGNATURES), st.binary(max_size=600), st.sampled_from(TRAILERS))
def test_random_bytes_behind_an_image_signature(signature, body, trailer):
    data = signature + body + trailer
    valid_or_own_error(lambda: decode_image_bytes(data, "scan.png"), assert_image, BadImageError)
    valid_or_own_error(lambda: (check_image_bytes(data, "scan.jpg"), decode_image_bytes(data, "scan.jpg"))[1],
                       assert_image, BadImageError)


@FUZZ
@given(damaged(encoded_images))
def test_damaged_images_decode_or_are_refused(data):
    valid_or_own_error(lambda: (check_image_bytes(data, "scan.tif"), decode_image_bytes(data, "scan.tif"))[1],
                       assert_image, BadImageError)


@FUZZ
@given(st.integers(0, 2**16), st.integers(1, 40), st.integers(1, 40),
       st.sampled_from(["gray", "gray16", "rgb", "rgb16", "rgba"]), st.sampled_from([".png", ".bmp", ".tif", ".jpg"]))
def test_every_valid_image_decodes_at_its_own_size(seed, height, width, mode, ext):
    image = decode_image_bytes(_encoded(seed, height, width, mode, ext), f"scan{ext}")
    assert_image(image)
    assert image.shape[:2] == (height, width)


@FUZZ
@given(st.one_of(st.binary(max_size=300), damaged(encoded_images)),
       st.sampled_from(sorted(IMAGE_EXTENSIONS) + [".JPG", ".Png", ".txt", ".gif", ""]))
def test_read_image_on_any_file(scratch, data, suffix):
    path = scratch / f"fuzzed scan{suffix}"
    path.write_bytes(data)
    valid_or_own_error(lambda: read_image(path), assert_image, BadImageError)


# ------------------------------------------------------------------------------------------ JSON values
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6),
                         st.just(10**400))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
numbers = st.one_of(st.integers(-3, 40), st.floats(-3, 40), st.floats(), st.just(10**400), json_scalars)
names = st.one_of(st.sampled_from(["Y16.jpg", "y2.PNG", "x/Y16.JPG", "1 no.jpeg", "Y99.jpg", "", "y16"]), json_values)
ids = st.one_of(st.integers(0, 3), st.sampled_from(["a", "1"]), json_values)
sizes = st.one_of(st.sampled_from([20, 30, 12, 10, 16, 20.0, 30.5]), json_values)


def _write_json(scratch: Path, name: str, payload, ndjson: bool = False) -> Path:
    path = scratch / name
    if ndjson and isinstance(payload, list):
        path.write_text("\n".join(json.dumps(row) for row in payload) + "\n")
    else:
        path.write_text(json.dumps(payload))
    return path


@FUZZ
@given(json_values, st.sampled_from(["masks.json", "masks.ndjson", "masks.jsonl"]))
def test_any_json_loads_as_masks_or_is_refused(scratch, payload, name):
    path = _write_json(scratch, name, payload, ndjson=name != "masks.json")
    valid_or_own_error(lambda: load_masks(path, SIZES), assert_masks, MaskError)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["masks.json", "masks.ndjson"]))
def test_any_bytes_load_as_masks_or_are_refused(scratch, data, name):
    (scratch / name).write_bytes(data)
    valid_or_own_error(lambda: load_masks(scratch / name, SIZES), assert_masks, MaskError)


# ------------------------------------------------------------------------------------------------ COCO
polygons = st.one_of(st.lists(numbers, max_size=12), st.lists(st.integers(0, 30), min_size=6, max_size=12), json_values)
coco_images = st.fixed_dictionaries({"id": ids, "file_name": names}, optional={"height": sizes, "width": sizes})
coco_annotations = st.fixed_dictionaries({"image_id": ids, "segmentation": st.one_of(
    st.lists(polygons, max_size=3), json_values)}, optional={"iscrowd": json_scalars})
coco_files = st.fixed_dictionaries({
    "images": st.one_of(st.lists(st.one_of(coco_images, json_values), max_size=4), json_values),
    "annotations": st.one_of(st.lists(st.one_of(coco_annotations, json_values), max_size=4), json_values)},
    optional={"categories": json_values})


@FUZZ
@given(coco_files)
def test_coco_files_load_or_are_refused(scratch, payload):
    path = _write_json(scratch, "instances.json", payload)
    valid_or_own_error(lambda: load_coco(path, SIZES), assert_masks, MaskError)
    valid_or_own_error(lambda: load_masks(path, SIZES), assert_masks, MaskError)
    valid_or_own_error(lambda: load_masks(path, SIZES, skip_unmatched=True), assert_masks, MaskError)


# -------------------------------------------------------------------------------------------- Labelbox
points = st.one_of(st.fixed_dictionaries({"x": numbers, "y": numbers}), json_values)
labelbox_objects = st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "polygon": st.one_of(st.lists(points, max_size=6), json_values), "title": json_values, "name": json_values,
    "instanceURI": st.text(max_size=4), "mask": json_values, "annotation_kind": json_values}))
legacy_rows = st.fixed_dictionaries({"External ID": names}, optional={
    "Label": st.one_of(json_values, st.fixed_dictionaries({"objects": st.one_of(st.lists(labelbox_objects, max_size=3),
                                                                                json_values)})),
    "Skipped": json_scalars})
labels = st.one_of(json_values, st.fixed_dictionaries({}, optional={"annotations": st.one_of(
    json_values, st.fixed_dictionaries({}, optional={"objects": st.one_of(st.lists(labelbox_objects, max_size=3),
                                                                          json_values)}))}))
ndjson_rows = st.fixed_dictionaries({"data_row": st.one_of(
    st.fixed_dictionaries({}, optional={"external_id": names, "global_key": names}), json_values)}, optional={
    "media_attributes": st.one_of(st.fixed_dictionaries({}, optional={"height": sizes, "width": sizes}), json_values),
    "projects": st.one_of(json_values, st.dictionaries(st.text(max_size=3), st.one_of(
        json_values, st.fixed_dictionaries({}, optional={"labels": st.one_of(st.lists(labels, max_size=2),
                                                                             json_values)})), max_size=2))})


@FUZZ
@given(st.one_of(st.lists(st.one_of(legacy_rows, json_values), max_size=4),
                 st.lists(st.one_of(ndjson_rows, json_values), min_size=1, max_size=4)),
       st.sampled_from(["export.json", "export.ndjson"]))
def test_labelbox_exports_load_or_are_refused(scratch, rows, name):
    path = _write_json(scratch, name, rows, ndjson=name.endswith(".ndjson"))
    valid_or_own_error(lambda: load_labelbox(path, SIZES), assert_masks, MaskError)
    valid_or_own_error(lambda: load_masks(path, SIZES), assert_masks, MaskError)


# ------------------------------------------------------------------------------------- PNG mask folders
def _mask_image(seed: int, height: int, width: int, mode: str, ext: str) -> bytes:
    return _encoded(seed, height, width, mode, ext)


mask_files = st.one_of(
    st.builds(_mask_image, st.integers(0, 2**16), st.sampled_from([20, 12, 16, 1, 7]), st.sampled_from([30, 10, 16, 1]),
              st.sampled_from(["gray", "gray16", "rgb", "rgba"]), st.sampled_from([".png", ".jpg", ".bmp", ".tif"])),
    damaged(encoded_images), st.binary(max_size=200))


@FUZZ
@given(st.dictionaries(st.sampled_from(["Y16.png", "y2.PNG", "y16.jpg", "1 no.bmp", "Y99.png", "y2.tif", "notes.txt",
                                        ".hidden.png"]), mask_files, max_size=4))
def test_mask_folders_load_or_are_refused(files):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "masks"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        valid_or_own_error(lambda: load_png_folder(folder, SIZES), assert_masks, MaskError)
        valid_or_own_error(lambda: load_masks(folder, SIZES, skip_unmatched=True), assert_masks, MaskError)
