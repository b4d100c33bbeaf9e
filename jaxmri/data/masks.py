"""Tumor-mask import: COCO polygons, folders of mask images and Labelbox exports (paper Section 3.1).

The paper drew its masks in Labelbox; the masks shipped with the real data were drawn in CVAT and
exported twice (COCO polygons and RGB PNGs). Every source becomes ONE representation, a dict
``{lower-case image file stem: uint8 (H, W) mask in {0, 1}}`` at the original image size, where 1
means tumor. The U-Net's resizing to its input size happens later, never here.

    >>> sizes = {"y1": (218, 180)}                                        # stem -> (H, W)
    >>> masks = load_masks("annotations/tumor_polygons_coco.json", sizes)  # doctest: +SKIP
    >>> masks["y1"].dtype, masks["y1"].shape                              # doctest: +SKIP
    (dtype('uint8'), (218, 180))

Rules every loader follows:

* Matching: an annotation names its image by file name (``file_name``, ``External ID``,
  ``external_id``, the mask's own file name). Folders and the extension are dropped and the stem is
  compared case-insensitively, so ``"50 mri .../Y16.jpg"`` matches ``yes/Y16.JPG``.
* Polygons use pixel-corner coordinates (COCO and Labelbox alike): pixel ``(row, col)`` is the square
  ``[col, col+1) x [row, row+1)`` and its centre is ``(col + 0.5, row + 0.5)``. A pixel is tumor when
  its centre lies inside a polygon. Plain ``cv2.fillPoly`` rounds vertices to whole pixels and also
  paints every pixel the outline touches, which grows a mask by about half a pixel all round (+11 %
  area on the smallest real tumor). So each polygon is filled with ``cv2.fillPoly`` on a grid
  ``_SUPERSAMPLE`` times finer (odd, so one fine pixel sits on each pixel centre) and that centre
  pixel is kept: the centre test is then exact to ``1 / (2 * _SUPERSAMPLE)`` px. Several polygons
  (and objects) on one image are OR-ed; holes are not subtracted.
* Vertices may lie up to ``EDGE_TOLERANCE_PX`` (1 px) outside ``[0, W] x [0, H]``: annotation tools
  round and snap at the border. Anything further out means the polygon belongs to another image or
  another resolution, and is an error.
* What counts as annotated: a COCO image with at least one annotation, a mask file, a Labelbox data
  row with a submitted (not skipped) label; a label with no objects gives an all-zero mask. Images
  with no annotation are absent from the result.
* Anything wrong raises ``MaskError`` with one line: ``"<file>: <entry>: <problem>; <what to do>."``
  Nothing is returned until every entry has been checked (with ``skip_unmatched``, the polygons of
  images that are not in ``image_sizes`` are not drawn, so only their structure is checked).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from jaxmri.data.images import imdecode_quietly
from jaxmri.errors import MaskError

MASK_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
EDGE_TOLERANCE_PX = 1.0
_SUPERSAMPLE = 5  # odd; fine-grid memory is (25 x polygon bounding box) bytes, at most ~52 MB at 1080p
_JPEG_THRESHOLD = 127  # lossy JPEG leaves faint non-zero noise around black, so JPEG masks need > half
_LABELBOX_URL_FIX = ("export the masks as PNG files named after their images and pass that folder "
                     "instead (jaxmri never downloads from Labelbox)")


def _error(path: str | Path, entry: str, problem: str, fix: str) -> MaskError:
    return MaskError(f"{path}: {entry}: {problem}; {fix}.".replace("\n", " "))


def _sizes(image_sizes: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {str(stem).lower(): (int(hw[0]), int(hw[1])) for stem, hw in image_sizes.items()}


def _lookup(name: object, sizes: dict[str, tuple[int, int]], path: Path, entry: str,
            skip_unmatched: bool = False) -> str | None:
    """The ``sizes`` key an annotation's image name refers to (stem first, then the whole name); None
    for a name that matches no image when ``skip_unmatched``, else a ``MaskError``."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1].lower()
    for key in (os.path.splitext(base)[0], base):  # whole name: external IDs without an extension
        if key in sizes:
            return key
    if skip_unmatched:
        return None
    raise _error(path, entry, f"matches none of the {len(sizes)} dataset images (compared by file stem "
                 f"{os.path.splitext(base)[0]!r}, ignoring case)",
                 "fix the name in the annotations or pass the image folder they were drawn on")


def _whole(value) -> bool:
    """A JSON size value that is a whole number (``218`` or ``218.0``, not ``"218"``, ``true`` or ``[218]``)."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def _check_size(mask_hw, image_hw, path: Path, entry: str) -> None:
    if not all(_whole(v) for v in mask_hw):
        raise _error(path, entry, f"gives the size {mask_hw[0]!r} x {mask_hw[1]!r} (height x width), which is not two "
                     "whole numbers", "re-export the annotations unedited")
    if tuple(mask_hw) != tuple(image_hw):
        raise _error(path, entry, f"is {mask_hw[0]}x{mask_hw[1]} (HxW) but the image is "
                     f"{image_hw[0]}x{image_hw[1]}", "export the masks at the original image size")


def _fill_polygon(mask: np.ndarray, xy: np.ndarray) -> None:
    """OR one polygon, float (N, 2) pixel-corner ``(x, y)``, into ``mask`` uint8 (H, W) in place."""
    h, w = mask.shape
    x0, y0 = max(int(np.floor(xy[:, 0].min())), 0), max(int(np.floor(xy[:, 1].min())), 0)
    x1, y1 = min(int(np.ceil(xy[:, 0].max())), w), min(int(np.ceil(xy[:, 1].max())), h)
    if x1 <= x0 or y1 <= y0:
        return
    s = _SUPERSAMPLE
    fine = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
    # Fine pixel k is centred on corner coordinate (k + 0.5) / s: x lands on fine centre-coordinate x*s - 0.5.
    cv2.fillPoly(fine, [np.round((xy - (x0, y0)) * s - 0.5).astype(np.int32)], 1)
    c = s // 2  # fine pixel c + s*i is centred exactly on the centre of pixel i
    mask[y0:y1, x0:x1] |= fine[c::s, c::s]


def _vertices(values: list, path: Path, entry: str) -> np.ndarray:
    """float (N, 2) ``(x, y)`` from a flat list of JSON numbers ``[x0, y0, x1, y1, ...]``."""
    try:
        return np.asarray(values, np.float64).reshape(-1, 2)
    except OverflowError:  # an integer with hundreds of digits is valid JSON but no float
        raise _error(path, entry, "has a coordinate too large to be a pixel position",
                     "redraw the polygon or re-export") from None


def _polygon(points, hw: tuple[int, int], path: Path, entry: str) -> np.ndarray:
    """Validate a float (N, 2) ``(x, y)`` vertex array against an (H, W) image and return it."""
    if points.ndim != 2 or points.shape[0] < 3:
        raise _error(path, entry, f"is a degenerate polygon with {len(points)} point(s)",
                     "a polygon needs at least 3 points; delete or redraw it")
    if not np.isfinite(points).all():
        raise _error(path, entry, "has non-finite coordinates", "redraw the polygon or re-export")
    h, w = hw
    lo, hi = points.min(axis=0), points.max(axis=0)
    tol = EDGE_TOLERANCE_PX
    if lo.min() < -tol or hi[0] > w + tol or hi[1] > h + tol:
        bad = points[np.argmax(np.maximum(-points, points - (w, h)).max(axis=1))]
        raise _error(path, entry, f"has vertex ({bad[0]:.1f}, {bad[1]:.1f}) outside the {h}x{w} (HxW) image "
                     f"(x in 0..{w}, y in 0..{h}, {tol:g} px tolerance)",
                     "check that the polygon was drawn on this image at its original size")
    return points


def _read_json(path: Path):
    """Parsed JSON of ``path``; a ``.ndjson``/``.jsonl`` file (or a ``.json`` holding NDJSON) gives a list."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _error(path, "file", "does not exist", "check the path to the annotation export") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _error(path, "file", f"cannot be read as UTF-8 text ({err})",
                     "re-export the annotations") from None
    if path.suffix.lower() not in (".ndjson", ".jsonl"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # "Extra data" after one object: NDJSON saved as .json
                raise _error(path, f"line {err.lineno} column {err.colno}", f"is not valid JSON ({err.msg})",
                             "re-export the file; it may be truncated or hand-edited") from None
        except (ValueError, RecursionError) as err:
            raise _error(path, "file", f"cannot be parsed ({_parse_problem(err)})", "re-export the file") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise _error(path, f"line {lineno}", f"is not valid JSON ({err.msg})",
                             "re-export the file; each NDJSON line must hold one whole JSON object") from None
            except (ValueError, RecursionError) as err:
                raise _error(path, f"line {lineno}", f"cannot be parsed ({_parse_problem(err)})",
                             "re-export the file") from None
    return records


def _parse_problem(err: Exception) -> str:
    """Valid JSON that Python's parser still refuses: nesting beyond its recursion limit, or an integer
    longer than ``sys.get_int_max_str_digits()`` digits."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return "a number with too many digits" if "digits" in str(err) else str(err).split(";")[0]


def _require_annotations(count: int, path: Path) -> None:
    if not count:
        raise _error(path, "file", "contains no annotated images",
                     "check the export options (labelled rows, polygon annotations) or pass another file")


def load_coco(path: str | Path, image_sizes: Mapping[str, tuple[int, int]], *,
              skip_unmatched: bool = False) -> dict[str, np.ndarray]:
    """Masks from a COCO instance file with polygon ``segmentation`` lists (e.g. CVAT "COCO 1.0").

    Every category counts as tumor. RLE segmentations (``iscrowd=1``) are refused. Returns
    ``{stem: uint8 (H, W) in {0, 1}}`` for each image with at least one annotation.
    ``skip_unmatched``: see ``load_masks``.
    """
    path = Path(path)
    return _coco_masks(_read_json(path), path, _sizes(image_sizes), skip_unmatched)


def _coco_masks(data, path: Path, sizes: dict[str, tuple[int, int]], skip_unmatched: bool = False) -> dict[str, np.ndarray]:
    fix = "export COCO instance polygons again, unedited"
    if not (isinstance(data, dict) and isinstance(data.get("images"), list)
            and isinstance(data.get("annotations"), list)):
        raise _error(path, "top level", "is not a COCO file (needs 'images' and 'annotations' lists)", fix)
    images = {}
    for i, image in enumerate(data["images"]):
        if not (isinstance(image, dict) and "id" in image and isinstance(image.get("file_name"), str)):
            raise _error(path, f"images[{i}]", "lacks 'id' or 'file_name'", fix)
        if not isinstance(image["id"], (int, str)):
            raise _error(path, f"images[{i}]", f"has the id {image['id']!r}, which is neither a number nor a string", fix)
        images[image["id"]] = image
    polygons: dict[object, list[tuple[str, np.ndarray]]] = {}
    for j, ann in enumerate(data["annotations"]):
        entry = f"annotations[{j}]"
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), (int, str)) or ann["image_id"] not in images:
            raise _error(path, entry, "has no 'image_id' listed under 'images'", fix)
        entry = f"annotations[{j}] on {images[ann['image_id']]['file_name']!r}"
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            raise _error(path, entry, "is an RLE mask, not polygons",
                         "export polygons, or PNG masks and pass their folder instead")
        if not isinstance(seg, list) or not seg:
            raise _error(path, entry, "has no polygon in 'segmentation'", "delete it or redraw it")
        for k, flat in enumerate(seg):
            ok = isinstance(flat, list) and len(flat) % 2 == 0 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat)
            if not ok:
                raise _error(path, f"{entry} polygon {k}", "is not a flat list of x, y numbers", fix)
            polygons.setdefault(ann["image_id"], []).append(
                (f"{entry} polygon {k}", _vertices(flat, path, f"{entry} polygon {k}")))
    _require_annotations(len(polygons), path)
    masks: dict[str, np.ndarray] = {}
    for image_id, polys in polygons.items():
        image = images[image_id]
        entry = f"image {image['file_name']!r}"
        key = _lookup(image["file_name"], sizes, path, entry, skip_unmatched)
        if key is None:
            continue
        if key in masks:
            raise _error(path, entry, f"has the same stem as another image entry ({key!r})",
                         "keep one entry per image; stems are compared ignoring case and extension")
        if "height" in image and "width" in image:
            _check_size((image["height"], image["width"]), sizes[key], path, entry)
        mask = np.zeros(sizes[key], np.uint8)
        for where, xy in polys:
            _fill_polygon(mask, _polygon(xy, sizes[key], path, where))
        masks[key] = mask
    return masks


def load_png_folder(path: str | Path, image_sizes: Mapping[str, tuple[int, int]], *,
                    skip_unmatched: bool = False) -> dict[str, np.ndarray]:
    """Masks from a folder of mask images named after their images (``Y1.png`` for ``Y1.jpg``).

    Suffixes ``MASK_SUFFIXES`` (any case). Any non-zero pixel in any colour channel is tumor (the real
    masks are RGB, tumor = (255, 20, 147)); a zero alpha means background. JPEG files (recognised by
    their first bytes) need a channel above 127, because compression leaves noise around black.
    Dot-files are skipped; any other file is an error rather than silently ignored.
    ``skip_unmatched``: see ``load_masks``.
    """
    folder, sizes = Path(path), _sizes(image_sizes)
    if not folder.is_dir():
        raise _error(folder, "folder", "does not exist or is not a folder", "pass the folder of mask images")
    masks: dict[str, np.ndarray] = {}
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for file in files:
        entry = f"mask {file.name!r}"
        if file.is_dir() or file.suffix.lower() not in MASK_SUFFIXES:
            raise _error(folder, entry, f"is not a mask image ({', '.join(MASK_SUFFIXES)})",
                         "move it out of the mask folder")
        key = _lookup(file.name, sizes, folder, entry, skip_unmatched)
        if key is None:
            continue
        if key in masks:
            raise _error(folder, entry, f"is a second mask for image stem {key!r}", "keep one mask per image")
        try:
            data = file.read_bytes()
        except OSError as err:  # a broken link, a file that vanished, no permission
            raise _error(folder, entry, f"cannot be read ({err.strerror or err})", "export the mask again") from None
        raw, messages = imdecode_quietly(data, cv2.IMREAD_UNCHANGED)
        if raw is None:
            detail = "an empty file" if not data else (messages[-1][:160] if messages else "damaged or not an image")
            raise _error(folder, entry, f"cannot be decoded as an image ({detail})", "re-export the mask")
        _check_size(raw.shape[:2], sizes[key], folder, entry)
        colour = raw.reshape(*raw.shape[:2], -1)
        on = colour[..., :3].max(axis=-1) > (_JPEG_THRESHOLD if data.startswith(b"\xff\xd8\xff") else 0)
        if colour.shape[-1] == 4:
            on &= colour[..., 3] > 0
        masks[key] = on.astype(np.uint8)
    if not files:
        raise _error(folder, "folder", f"holds no mask images ({', '.join(MASK_SUFFIXES)})",
                     "pass the folder that holds the exported masks")
    return masks


def load_labelbox(path: str | Path, image_sizes: Mapping[str, tuple[int, int]], *,
                  skip_unmatched: bool = False) -> dict[str, np.ndarray]:
    """Masks from a Labelbox export with polygon objects: the legacy JSON list (``"External ID"``,
    ``"Label": {"objects": [...]}``) or the current NDJSON (``data_row.external_id``,
    ``media_attributes``, ``projects.<id>.labels[].annotations.objects[]``).

    Objects that are segmentation masks only hold a URL (``instanceURI``, ``mask.url``); they are
    refused with a request to export PNG masks. Other non-polygon tools (boxes, points) are refused
    too. Skipped legacy rows and data rows without labels are not annotated. ``skip_unmatched``: see
    ``load_masks``.
    """
    path = Path(path)
    return _labelbox_masks(_read_json(path), path, _sizes(image_sizes), skip_unmatched)


def _labelbox_rows(data, path: Path):
    """Yield ``(row entry, image name, [(H, W)] or [], objects list)`` for each labelled row."""
    rows = [data] if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise _error(path, "top level", "is not a Labelbox export (a list of rows)",
                     "re-export from Labelbox")
    for r, row in enumerate(rows):
        entry = f"row {r}"
        if isinstance(row, dict) and isinstance(row.get("data_row"), dict):  # current NDJSON export
            name = row["data_row"].get("external_id") or row["data_row"].get("global_key")
            try:
                media = row.get("media_attributes") or {}
                hw = [(media["height"], media["width"])] if "height" in media and "width" in media else []
                labels = [label for project in (row.get("projects") or {}).values()
                          for label in (project.get("labels") or [])]
                objects = (labels[0].get("annotations") or {}).get("objects", []) if labels else []
            except (AttributeError, TypeError, KeyError) as err:  # a list or string where a dict belongs
                raise _error(path, f"{entry} ({name!r})", f"does not have the Labelbox export layout ({err})",
                             "re-export from Labelbox without editing the file") from None
            if len(labels) > 1:
                raise _error(path, f"{entry} ({name!r})", f"has {len(labels)} labels",
                             "export one label per image (one project, consensus labels left out)")
            if labels:
                yield entry, name, hw, objects
        elif isinstance(row, dict) and ("External ID" in row or "Label" in row):  # legacy JSON export
            label = row.get("Label")
            if row.get("Skipped") or label in (None, "Skip", {}):
                continue
            if not isinstance(label, dict) or ("objects" not in label
                                               and set(label) - {"classifications", "relationships"}):
                raise _error(path, f"{entry} ({row.get('External ID')!r})", "has no 'Label.objects' list",
                             "re-export with the current Labelbox image editor format")
            yield entry, row.get("External ID"), [], label.get("objects", [])
        else:
            raise _error(path, entry, "has neither 'data_row' nor 'External ID'", "re-export from Labelbox")


def _labelbox_polygon(obj, hw: tuple[int, int], path: Path, entry: str) -> np.ndarray:
    """Validated float (N, 2) ``(x, y)`` vertices of one Labelbox object, or a ``MaskError``."""
    info = obj if isinstance(obj, dict) else {}
    title = info.get("name") or info.get("title") or info.get("value")
    entry += f" ({title!r})" if title else ""
    points = info.get("polygon")
    if points is not None:
        numbers = (int, float)
        if not (isinstance(points, list) and all(
                isinstance(p, dict) and isinstance(p.get("x"), numbers) and isinstance(p.get("y"), numbers)
                for p in points)):
            raise _error(path, entry, "has a 'polygon' that is not a list of {x, y} points",
                         "re-export from Labelbox")
        return _polygon(_vertices([[p["x"], p["y"]] for p in points], path, entry), hw, path, entry)
    if info.get("instanceURI") or isinstance(info.get("mask"), dict) or "composite_mask" in info:
        raise _error(path, entry, "is a segmentation mask stored only as a Labelbox URL", _LABELBOX_URL_FIX)
    raise _error(path, entry, f"is a {info.get('annotation_kind', 'non-polygon')} object, and only polygons "
                 "give masks", "redraw tumors as polygons, or export PNG masks and pass their folder")


def _labelbox_masks(data, path: Path, sizes: dict[str, tuple[int, int]],
                    skip_unmatched: bool = False) -> dict[str, np.ndarray]:
    masks: dict[str, np.ndarray] = {}
    labelled = 0
    for entry, name, hw, objects in _labelbox_rows(data, path):
        labelled += 1
        entry = f"{entry} ({name!r})"
        if not name:
            raise _error(path, entry, "has no external ID or global key",
                         "set each data row's external ID to its image file name")
        key = _lookup(name, sizes, path, entry, skip_unmatched)
        if key is None:
            continue
        if key in masks:
            raise _error(path, entry, f"is a second labelled row for image stem {key!r}",
                         "export one label per image")
        if hw:
            _check_size(hw[0], sizes[key], path, entry)
        if not isinstance(objects, list):
            raise _error(path, entry, "has an 'objects' entry that is not a list", "re-export from Labelbox")
        mask = np.zeros(sizes[key], np.uint8)
        for k, obj in enumerate(objects):
            _fill_polygon(mask, _labelbox_polygon(obj, sizes[key], path, f"{entry} object {k}"))
        masks[key] = mask
    _require_annotations(labelled, path)
    return masks


def load_masks(source: str | Path, image_sizes: Mapping[str, tuple[int, int]], *,
               skip_unmatched: bool = False) -> dict[str, np.ndarray]:
    """Masks from any supported source, detected by what it is (paper Section 3.1).

    Args:
        source: a folder of mask images, a COCO ``.json``, or a Labelbox ``.json``/``.ndjson``.
        image_sizes: ``{lower-case file stem: (H, W)}`` of every image in the dataset.
        skip_unmatched: leave out the annotations of images that are not in ``image_sizes`` instead of
            refusing them (``predict --localisation`` on a few of the annotated images). The whole
            source is still checked, so ``load_masks(source, {}, skip_unmatched=True)`` checks a source
            before its images are known (it returns ``{}``).

    Returns:
        ``{lower-case stem: uint8 (H, W) mask in {0, 1}}`` for every annotated image.

    Raises:
        MaskError: one line naming the file, the entry and what to do (see the module docstring).
    """
    path, sizes = Path(source), _sizes(image_sizes)
    if path.is_dir():
        return load_png_folder(path, sizes, skip_unmatched=skip_unmatched)
    if path.suffix.lower() not in (".json", ".ndjson", ".jsonl"):
        if not path.exists():  # (a missing .json is named by _read_json)
            raise _error(path, "source", "does not exist",
                         "pass a COCO .json, a Labelbox .json/.ndjson export or a folder of mask images")
        raise _error(path, "source", "is neither a folder of masks nor a .json/.ndjson file",
                     "pass a COCO .json, a Labelbox .json/.ndjson export or a folder of mask images")
    data = _read_json(path)
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return _coco_masks(data, path, sizes, skip_unmatched)
    first = data[0] if isinstance(data, list) and data else data
    if isinstance(first, dict) and ("data_row" in first or "External ID" in first or "Label" in first):
        return _labelbox_masks(data, path, sizes, skip_unmatched)
    raise _error(path, "top level", "is neither COCO ('images' and 'annotations') nor a Labelbox export "
                 "('External ID' or 'data_row' rows)", "pass a COCO instances file or a Labelbox export")
