"""Tests for jaxmri.data.masks: COCO, mask-folder and Labelbox import, errors, and the real CVAT exports."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from jaxmri.data.masks import (_SUPERSAMPLE, load_coco, load_labelbox, load_masks,
                               load_png_folder)
from jaxmri.errors import MaskError

SIZES = {"y16": (20, 30), "y2": (12, 10), "1 no": (16, 16)}
SQUARE = [(2, 2), (6, 2), (6, 6), (2, 6)]          # pixel corners: covers rows 2..5, cols 2..5
BAR = [(10, 10), (14, 10), (14, 12), (10, 12)]     # covers rows 10..11, cols 10..13
TRIANGLE = [(20, 3), (28, 3), (24, 9)]


def _expected(hw, *boxes):
    mask = np.zeros(hw, np.uint8)
    for r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = 1
    return mask


def _flat(points):
    return [float(v) for xy in points for v in xy]


def _lb(points):
    return [{"x": float(x), "y": float(y)} for x, y in points]


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _coco(tmp_path, images, annotations, name="instances.json"):
    return _write(tmp_path / name, {"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "Tumor"}]})


def _coco_image(i, file_name, hw):
    return {"id": i, "file_name": file_name, "height": hw[0], "width": hw[1]}


def _coco_ann(i, image_id, *polygons):
    return {"id": i, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "segmentation": [_flat(p) for p in polygons]}


def _ndjson_row(external_id, hw, objects, labels=1):
    label = {"id": "lab", "annotations": {"objects": objects, "classifications": [], "relationships": []}}
    return {"data_row": {"id": "dr-" + external_id, "external_id": external_id},
            "media_attributes": {"height": hw[0], "width": hw[1], "mime_type": "image/jpeg"},
            "projects": {"proj1": {"name": "tumors", "labels": [label] * labels}}}


def _nd_polygon(points, name="tumor"):
    return {"feature_id": "f", "name": name, "annotation_kind": "ImagePolygon", "polygon": _lb(points)}


def _write_ndjson(path, rows):
    return _write(path, "\n".join(json.dumps(r) for r in rows) + "\n")


# ---------------------------------------------------------------------------------------------- formats
def test_coco_several_polygons_are_ored_and_matched_by_stem(tmp_path):
    # The CVAT export names "folder/Y16.jpg" for the dataset file yes/Y16.JPG.
    images = [_coco_image(1, "50 mri/Y16.jpg", (20, 30)), _coco_image(2, "50 mri/y2.PNG", (12, 10))]
    path = _coco(tmp_path, images, [_coco_ann(1, 1, SQUARE, TRIANGLE), _coco_ann(2, 1, BAR)])
    masks = load_masks(path, SIZES)
    assert set(masks) == {"y16"}  # y2 is listed but has no annotation
    mask = masks["y16"]
    assert mask.dtype == np.uint8 and mask.shape == (20, 30) and set(np.unique(mask)) == {0, 1}
    square_and_bar = _expected((20, 30), (2, 6, 2, 6), (10, 12, 10, 14))
    assert np.array_equal(mask[:, :20], square_and_bar[:, :20])
    assert mask[:, 20:].sum() > 0  # the triangle
    assert np.array_equal(load_coco(path, SIZES)["y16"], mask)


def _distance_to_outline(px, py, points):
    pts = np.asarray(points, float)
    best = np.full(px.shape, np.inf)
    for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0)):
        t = np.clip(((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
        best = np.minimum(best, np.hypot(px - ax - t * (bx - ax), py - ay - t * (by - ay)))
    return best


def _inside(px, py, points):
    inside = np.zeros(px.shape, bool)  # even-odd ray casting
    pts = np.asarray(points, float)
    for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0)):
        crosses = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (px < x_at)
    return inside


@pytest.mark.parametrize("points", [
    [(3.3, 1.7), (17.8, 4.2), (14.1, 16.9), (2.2, 12.6)],                       # skewed quad
    [(1.6, 1.8), (18.2, 1.8), (18.2, 6.3), (7.7, 6.3), (7.7, 17.4), (1.6, 17.4)],  # concave L
    [(10, 0.4), (19.6, 10), (10, 19.6), (0.4, 10)],                             # diamond
])
def test_polygon_pixels_are_those_whose_centres_are_inside(tmp_path, points):
    path = _coco(tmp_path, [_coco_image(1, "y16.jpg", (20, 30))], [_coco_ann(1, 1, points)])
    mask = load_coco(path, SIZES)["y16"].astype(bool)
    rows, cols = np.mgrid[0:20, 0:30]
    px, py = cols + 0.5, rows + 0.5  # pixel-corner convention: centres sit at +0.5
    reference = _inside(px, py, points)
    # The documented precision: centres farther than 1 / (2 * _SUPERSAMPLE) px from the outline are exact.
    clear = _distance_to_outline(px, py, points) > 0.5 / _SUPERSAMPLE + 1e-9
    assert np.array_equal(mask[clear], reference[clear])
    assert clear.sum() > 0.9 * clear.size


def test_png_folder_colour_gray_alpha_and_jpeg(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[2:6, 2:6] = (147, 20, 255)  # RGB (255, 20, 147) in OpenCV's BGR order
    cv2.imwrite(str(folder / "Y16.PNG"), colour)
    gray01 = _expected((12, 10), (3, 7, 1, 4))
    cv2.imwrite(str(folder / "y2.bmp"), gray01)  # {0, 1}: any non-zero value is tumor
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 255  # white but transparent background, as Labelbox instance masks
    rgba[5:9, 4:12, 3] = 255
    cv2.imwrite(str(folder / "1 no.png"), rgba)
    masks = load_masks(folder, SIZES)
    assert np.array_equal(masks["y16"], _expected((20, 30), (2, 6, 2, 6)))
    assert np.array_equal(masks["y2"], gray01)
    assert np.array_equal(masks["1 no"], _expected((16, 16), (5, 9, 4, 12)))
    assert all(m.dtype == np.uint8 for m in masks.values())

    jpeg_folder = tmp_path / "jpeg"
    jpeg_folder.mkdir()
    block = _expected((20, 30), (3, 17, 5, 27)) * 255  # not on JPEG's 8x8 grid: ringing around it
    cv2.imwrite(str(jpeg_folder / "Y16.jpg"), block)
    noisy = cv2.imread(str(jpeg_folder / "Y16.jpg"), cv2.IMREAD_GRAYSCALE)
    assert (noisy > 0).sum() > (block > 0).sum()  # the case the JPEG threshold exists for
    assert np.array_equal(load_png_folder(jpeg_folder, SIZES)["y16"], block // 255)


def test_labelbox_legacy_json(tmp_path):
    rows = [
        {"ID": "a", "External ID": "Y16.jpg", "Label": {"objects": [
            {"featureId": "f1", "title": "tumor", "value": "tumor", "polygon": _lb(SQUARE),
             "instanceURI": "https://api.labelbox.com/masks/f1"},  # vector polygons carry a URL too
            {"featureId": "f2", "title": "tumor", "polygon": _lb(BAR)}], "classifications": []}},
        {"ID": "b", "External ID": "y2.jpg", "Label": {}},  # skipped
    ]
    masks = load_masks(_write(tmp_path / "export.json", rows), SIZES)
    assert set(masks) == {"y16"}
    assert np.array_equal(masks["y16"], _expected((20, 30), (2, 6, 2, 6), (10, 12, 10, 14)))


@pytest.mark.parametrize("name", ["export.ndjson", "export.json"])  # NDJSON is sometimes saved as .json
def test_labelbox_ndjson(tmp_path, name):
    rows = [_ndjson_row("Y16.JPG", (20, 30), [_nd_polygon(SQUARE), _nd_polygon(BAR)]),
            _ndjson_row("y2.jpg", (12, 10), []),  # labelled, no tumor: all-zero mask
            {**_ndjson_row("1 no.jpeg", (16, 16), []), "projects": {}}]  # not labelled: absent
    path = _write_ndjson(tmp_path / name, rows)
    masks = load_masks(path, SIZES)
    assert set(masks) == {"y16", "y2"}
    assert np.array_equal(masks["y16"], _expected((20, 30), (2, 6, 2, 6), (10, 12, 10, 14)))
    assert masks["y2"].shape == (12, 10) and masks["y2"].sum() == 0
    assert all(np.array_equal(masks[k], v) for k, v in load_labelbox(path, SIZES).items())


def test_vertices_within_one_pixel_of_the_border_are_accepted(tmp_path):
    t = 0.9  # inside the documented 1 px tolerance (EDGE_TOLERANCE_PX)
    whole = [(-t, -t), (30 + t, -t), (30 + t, 20 + t), (-t, 20 + t)]
    path = _coco(tmp_path, [_coco_image(1, "Y16.jpg", (20, 30))], [_coco_ann(1, 1, whole)])
    assert load_coco(path, SIZES)["y16"].all()


# ----------------------------------------------------------------------------------------------- errors
def _folder(tmp_path, files):
    folder = tmp_path / "masks"
    folder.mkdir()
    for name, hw in files.items():
        if hw is None:
            (folder / name).write_text("notes")
        else:
            cv2.imwrite(str(folder / name), np.full(hw, 255, np.uint8))
    return folder


ERROR_CASES = {
    "coco missing image": (lambda p: _coco(p, [_coco_image(1, "x/Y99.jpg", (20, 30))],
                                           [_coco_ann(1, 1, SQUARE)]),
                           "instances.json", "'x/Y99.jpg'", "matches none of the 3 dataset images"),
    "coco wrong size": (lambda p: _coco(p, [_coco_image(1, "Y16.jpg", (40, 60))], [_coco_ann(1, 1, SQUARE)]),
                        "instances.json", "'Y16.jpg'", "is 40x60 (HxW) but the image is 20x30"),
    "coco outside image": (lambda p: _coco(p, [_coco_image(1, "Y16.jpg", (20, 30))],
                                           [_coco_ann(1, 1, [(2, 2), (31.5, 2), (6, 6)])]),
                           "instances.json", "annotations[0] on 'Y16.jpg' polygon 0", "(31.5, 2.0) outside"),
    "coco degenerate": (lambda p: _coco(p, [_coco_image(1, "Y16.jpg", (20, 30))],
                                        [_coco_ann(1, 1, [(2, 2), (5, 5)])]),
                        "instances.json", "polygon 0", "degenerate polygon with 2 point(s)"),
    "coco rle": (lambda p: _coco(p, [_coco_image(1, "Y16.jpg", (20, 30))],
                                 [{"id": 1, "image_id": 1, "segmentation": {"counts": "ab", "size": [2]}}]),
                 "instances.json", "annotations[0]", "RLE"),
    "coco dangling image_id": (lambda p: _coco(p, [], [_coco_ann(1, 7, SQUARE)]),
                               "instances.json", "annotations[0]", "'image_id'"),
    "truncated json": (lambda p: _write(p / "cut.json", '{"images": [{"id": 1, "file_name": "Y16.jpg"'),
                       "cut.json", "line 1 column", "not valid JSON"),
    "bad ndjson line": (lambda p: _write(p / "cut.ndjson", json.dumps(_ndjson_row("Y16.jpg", (20, 30), []))
                                         + '\n{"data_row": \n'), "cut.ndjson", "line 2", "not valid JSON"),
    "coco without annotations": (lambda p: _coco(p, [_coco_image(1, "Y16.jpg", (20, 30))], []),
                                 "instances.json", "file", "contains no annotated images"),
    "unknown json": (lambda p: _write(p / "other.json", {"hello": 1}), "other.json", "top level",
                     "neither COCO"),
    "not a json file": (lambda p: _write(p / "masks.txt", "x"), "masks.txt", "source", "neither a folder"),
    "missing file": (lambda p: p / "absent.json", "absent.json", "file", "does not exist"),
    "legacy mask url only": (lambda p: _write(p / "lb.json", [{"External ID": "Y16.jpg", "Label": {
        "objects": [{"title": "tumor", "instanceURI": "https://api.labelbox.com/masks/1"}]}}]),
        "lb.json", "row 0 ('Y16.jpg') object 0 ('tumor')", "export the masks as PNG"),
    "ndjson mask url only": (lambda p: _write_ndjson(p / "lb.ndjson", [_ndjson_row("Y16.jpg", (20, 30), [
        {"name": "tumor", "annotation_kind": "ImageSegmentationMask", "mask": {"url": "https://x/m.png"}}])]),
        "lb.ndjson", "object 0 ('tumor')", "pass that folder instead"),
    "ndjson bounding box": (lambda p: _write_ndjson(p / "lb.ndjson", [_ndjson_row("Y16.jpg", (20, 30), [
        {"name": "box", "annotation_kind": "ImageBoundingBox", "bounding_box": {"top": 1}}])]),
        "lb.ndjson", "object 0 ('box')", "ImageBoundingBox object"),
    "ndjson missing image": (lambda p: _write_ndjson(p / "lb.ndjson", [_ndjson_row("Y99.jpg", (20, 30), [])]),
                             "lb.ndjson", "row 0 ('Y99.jpg')", "matches none of the 3 dataset images"),
    "ndjson wrong size": (lambda p: _write_ndjson(p / "lb.ndjson", [_ndjson_row("y16.jpg", (30, 20), [])]),
                          "lb.ndjson", "row 0 ('y16.jpg')", "is 30x20 (HxW) but the image is 20x30"),
    "ndjson outside image": (lambda p: _write_ndjson(p / "lb.ndjson", [_ndjson_row("Y16.jpg", (20, 30), [
        _nd_polygon([(2, 2), (6, 2), (6, -3)])])]), "lb.ndjson", "object 0", "(6.0, -3.0) outside"),
    "ndjson degenerate": (lambda p: _write_ndjson(p / "lb.ndjson", [_ndjson_row("Y16.jpg", (20, 30), [
        _nd_polygon([(2, 2), (6, 2)])])]), "lb.ndjson", "object 0", "degenerate"),
    "ndjson bad layout": (lambda p: _write_ndjson(p / "lb.ndjson", [
        {**_ndjson_row("Y16.jpg", (20, 30), []), "projects": {"proj1": ["not", "a", "dict"]}}]),
                          "lb.ndjson", "row 0 ('Y16.jpg')", "does not have the Labelbox export layout"),
    "ndjson two labels": (lambda p: _write_ndjson(p / "lb.ndjson",
                                                  [_ndjson_row("Y16.jpg", (20, 30), [], labels=2)]),
                          "lb.ndjson", "row 0", "has 2 labels"),
    "empty folder": (lambda p: _folder(p, {}), "masks", "folder", "holds no mask images"),
    "folder missing image": (lambda p: _folder(p, {"Y16.png": (20, 30), "Y99.png": (20, 30)}),
                             "masks", "mask 'Y99.png'", "matches none of the 3 dataset images"),
    "folder wrong size": (lambda p: _folder(p, {"Y16.png": (30, 20)}), "masks", "mask 'Y16.png'",
                          "is 30x20 (HxW) but the image is 20x30"),
    "folder stray file": (lambda p: _folder(p, {"Y16.png": (20, 30), "notes.txt": None}), "masks",
                          "mask 'notes.txt'", "not a mask image"),
    "folder two masks one image": (lambda p: _folder(p, {"Y16.png": (20, 30), "y16.BMP": (20, 30)}), "masks",
                                   "mask", "second mask for image stem 'y16'"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_sources_raise_one_line_mask_error(tmp_path, case):
    build, file_name, entry, problem = ERROR_CASES[case]
    source = build(tmp_path)
    with pytest.raises(MaskError) as info:
        load_masks(source, SIZES)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    assert str(tmp_path / file_name) in message and entry in message and problem in message, message
    assert isinstance(info.value, ValueError)


# ------------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_coco_and_png_exports_agree(real_data_dir):
    data = real_data_dir
    coco, png = data / "annotations" / "tumor_polygons_coco.json", data / "annotations" / "masks_png"
    if not (coco.is_file() and png.is_dir()):
        pytest.skip(f"real annotations not found under {data} (set JAXMRI_DATA)")
    sizes = {}
    for image in sorted((data / "brain_tumor_dataset" / "yes").iterdir()):
        pixels = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        if pixels is not None:
            sizes[image.stem.lower()] = pixels.shape[:2]
    from_coco, from_png = load_masks(coco, sizes), load_masks(png, sizes)
    assert len(from_coco) == 50 and set(from_coco) == set(from_png)
    ious = {}
    for stem, a in from_coco.items():
        b = from_png[stem]
        assert a.shape == b.shape == sizes[stem] and a.dtype == b.dtype == np.uint8 and a.any()
        ious[stem] = float((a & b).sum() / (a | b).sum())
    worst = min(ious, key=ious.get)
    print(f"COCO vs PNG IoU over {len(ious)} images: min {ious[worst]:.4f} ({worst}), "
          f"mean {np.mean(list(ious.values())):.4f}")
    assert ious[worst] > 0.97 and np.mean(list(ious.values())) > 0.99
