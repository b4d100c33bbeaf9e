"""Reading and validating image files (paper Section 2.1: "no corrupted images").

The Kaggle brain-MRI set is messy on purpose: RGB, grayscale, RGBA and palette files, PNGs named
``.jpg``, upper-case extensions and spaces in names. Everything here turns any of those into ONE
representation, ``uint8 (H, W, 3)`` RGB in 0..255, or says in one line why it cannot:

    >>> rgb = read_image("data/brain_tumor_dataset/yes/Y16.JPG")   # doctest: +SKIP
    >>> rgb.dtype, rgb.shape                                         # doctest: +SKIP
    (dtype('uint8'), (H, W, 3))

Files are recognised by their first bytes (signature), not by their extension, because several files
in the real set are PNGs named ``.jpg``. The extension only decides whether a file is meant to be an
image at all: a ``notes.txt`` inside a class folder is reported, never silently skipped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from jaxmri.errors import BadImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})

# First bytes of each format we accept (the decoder is OpenCV, which reads all of them).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# A cut-off file loses its end marker; depending on where it was cut, OpenCV either fails with a
# vague warning or "decodes" it with a grey lower half. Inside JPEG scan data a 0xFF byte is always
# followed by 0x00 or a restart marker, so the end-of-image marker after the LAST start-of-scan is
# the real end, whatever an EXIF thumbnail or appended trailer bytes contain.
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"  # the IEND chunk with its fixed CRC


def image_format(data: bytes) -> str | None:
    """Return ``'JPEG'``, ``'PNG'``, ``'BMP'`` or ``'TIFF'`` from the file's first bytes, else None."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def check_image_bytes(data: bytes, path: str | Path) -> str:
    """Cheap structural checks on a file's bytes (no decoding); returns the format name.

    Raises ``BadImageError`` for: an extension outside ``IMAGE_EXTENSIONS``, an empty file, bytes that
    are not one of the accepted image formats, a JPEG with no end-of-image marker after its last scan
    or a PNG without its IEND chunk (truncated), or a BMP shorter than its header says.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        allowed = ", ".join(sorted(IMAGE_EXTENSIONS))
        shown = f"'{suffix}'" if suffix else "no extension"
        raise BadImageError(path, f"not an image file ({shown}; expected one of {allowed})")
    if len(data) == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    fmt = image_format(data)
    if fmt is None:
        raise BadImageError(path, "not an image (the file does not start like a JPEG, PNG, BMP or TIFF)")
    if fmt == "JPEG":
        last_scan = data.rfind(_JPEG_SOS)
        if last_scan < 0 or data.find(_JPEG_EOI, last_scan) < 0:
            raise BadImageError(path, f"truncated JPEG (no end-of-image marker; {len(data)} bytes)")
    if fmt == "PNG" and _PNG_IEND not in data:
        raise BadImageError(path, f"truncated PNG (no IEND chunk; {len(data)} bytes)")
    if fmt == "BMP" and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
        if len(data) < declared:
            raise BadImageError(path, f"truncated BMP ({len(data)} of {declared} bytes)")
    return fmt


def _stretch_to_uint8(array: np.ndarray) -> np.ndarray:
    """Min-max stretch any numeric array to uint8 0..255 (a constant image becomes all zeros)."""
    array = np.nan_to_num(array.astype(np.float64))  # float TIFFs may hold NaN outside the body
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


@contextlib.contextmanager
def _decoder_output():
    """Collect what the C decoders print while decoding: yields a list that holds their lines afterwards.

    libjpeg and libpng write warnings and errors ("Corrupt JPEG data: premature end of data segment",
    "libpng error: IDAT: CRC error") straight to file descriptor 2, where a user would see them
    beside, and unrelated to, the one line that names the file. So descriptor 2 points at a temporary
    file for the duration of one decode (single-threaded callers only: another thread's writes to
    stderr in that window would land there too).
    """
    lines: list[str] = []
    if sys.stderr is not None:
        sys.stderr.flush()  # what Python already wrote stays on the real stderr
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to redirect: decode as is
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += [line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip()]


def imdecode_quietly(data: bytes, flags: int) -> tuple[np.ndarray | None, list[str]]:
    """``cv2.imdecode(data, flags)`` without a word on stderr: ``(array or None, the decoders' messages)``.

    Empty or undecodable data gives ``None`` (OpenCV raises for some of it and returns None for the
    rest); the messages are what OpenCV, libjpeg and libpng had to say, for the caller's one-line reason.
    """
    if not data:
        return None, []
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with _decoder_output() as messages:
            try:
                array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
            except cv2.error as err:
                array = None
                text = str(err).strip()
                messages.append(text.splitlines()[-1] if text else "OpenCV error")
    finally:
        cv2.utils.logging.setLogLevel(previous)
    return (array if array is not None and array.size else None), messages


def decode_image_bytes(data: bytes, path: str | Path) -> np.ndarray:
    """Decode checked bytes into ``uint8 (H, W, 3)`` RGB; raises ``BadImageError`` if OpenCV cannot.

    - gray (and 1-bit) -> the gray value copied to R, G and B;
    - RGBA / gray+alpha / palette with transparency -> composited on BLACK, because MRI backgrounds
      are black and a transparent border must not become a bright frame that the brain crop would keep;
    - palette -> its RGB colours (OpenCV expands the palette);
    - 16-bit or float -> min-max stretched per image to 0..255. MRI exports rarely use the full
      16-bit range (12-bit scanners give 0..4095), so a fixed ``/257`` would leave a nearly black
      image; stretching gives what a viewer's auto-window shows, like the 8-bit files in the set.
    - JPEG EXIF orientation is applied (the image as a viewer shows it); other formats are used as
      stored. The Kaggle files carry no rotation, so this only matters for new data.
    """
    # IMREAD_UNCHANGED keeps alpha and 16-bit but ignores EXIF rotation; JPEGs have no alpha, so
    # they are decoded with flags that honour the rotation.
    is_jpeg = data.startswith(b"\xff\xd8\xff")
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if is_jpeg else cv2.IMREAD_UNCHANGED
    array, messages = imdecode_quietly(data, flags)  # the decoders' lines go into our reason, not onto stderr
    if array is None:
        detail = messages[-1][:160] if messages else "damaged or unsupported image data"
        raise BadImageError(path, f"cannot be decoded ({detail})")
    if is_jpeg and any("premature end" in m.lower() for m in messages):
        # The scan data stops before the last pixel row: libjpeg has filled the rest with grey.
        raise BadImageError(path, "damaged or truncated JPEG (the scan data ends before the last row of pixels)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] not in (3, 4):
        raise BadImageError(path, f"unsupported number of channels ({array.shape[2]})")

    if array.dtype != np.uint8:
        if array.ndim == 3 and array.shape[2] == 4:
            opaque = float(np.iinfo(array.dtype).max) if array.dtype.kind in "ui" else 1.0
            array = _stretch_to_uint8(array[:, :, :3] * (array[:, :, 3:].astype(np.float64) / opaque))
        else:
            array = _stretch_to_uint8(array)
    elif array.ndim == 3 and array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.uint16)
        array = ((array[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)

    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2))
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def load_image_bytes(path: str | Path) -> tuple[bytes, np.ndarray]:
    """Read a file once, check it and decode it: returns ``(file bytes, uint8 (H, W, 3) RGB)``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BadImageError(path, f"cannot be read ({err.strerror or err})") from None
    check_image_bytes(data, path)
    return data, decode_image_bytes(data, path)


def check_image_file(path: str | Path) -> None:
    """Raise ``BadImageError`` unless ``path`` is a complete, decodable image (reads the file once).

    Reasons: unreadable, unknown extension, empty, not an image, truncated JPEG/PNG/BMP, undecodable.
    """
    load_image_bytes(path)


def read_image(path: str | Path) -> np.ndarray:
    """Read any supported image as ``uint8 (H, W, 3)`` RGB in 0..255; raises ``BadImageError``.

    See ``decode_image_bytes`` for how gray, RGBA, palette and 16-bit files are converted.
    """
    return load_image_bytes(path)[1]


def to_gray(image_rgb_uint8: np.ndarray) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB (or already-gray ``(H, W)`` / ``(H, W, 1)``) -> ``uint8 (H, W)`` luma."""
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"to_gray expects a uint8 image, got dtype {image.dtype}; use read_image to load it.")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"to_gray expects an (H, W, 3) RGB or (H, W) gray image, got shape {image.shape}.")
