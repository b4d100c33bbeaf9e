"""Every image mode becomes uint8 RGB; every kind of bad file is caught with a one-line reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from jaxmri.data.images import IMAGE_EXTENSIONS, check_image_file, read_image, to_gray
from jaxmri.errors import BadImageError

H, W = 40, 60
GRAY = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)
RGB = np.stack([GRAY, GRAY // 2, 255 - GRAY], axis=-1)


def _save(path, array, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return path


def _expect_rgb_uint8(image, shape=(H, W, 3)):
    assert image.dtype == np.uint8
    assert image.shape == shape
    assert image.flags.c_contiguous


def test_gray_png_is_copied_to_three_channels(tmp_path):
    image = read_image(_save(tmp_path / "gray.png", GRAY))
    _expect_rgb_uint8(image)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], GRAY)


def test_rgb_png_keeps_channel_order(tmp_path):
    np.testing.assert_array_equal(read_image(_save(tmp_path / "rgb.png", RGB)), RGB)


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.dstack([RGB, np.full((H, W), 128, np.uint8)])
    rgba[:5, :5, 3] = 0  # fully transparent corner -> black
    rgba[-5:, -5:, 3] = 255  # opaque corner -> unchanged
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    _expect_rgb_uint8(image)
    assert image[:5, :5].max() == 0
    np.testing.assert_array_equal(image[-5:, -5:], RGB[-5:, -5:])
    expected = np.round(RGB[10:20, 10:20].astype(float) * 128 / 255)
    assert np.abs(image[10:20, 10:20] - expected).max() <= 1


def test_gray_with_alpha_is_composited(tmp_path):
    Image.fromarray(np.dstack([GRAY, np.full((H, W), 255, np.uint8)]), "LA").save(tmp_path / "la.png")
    image = read_image(tmp_path / "la.png")
    _expect_rgb_uint8(image)
    np.testing.assert_array_equal(image[:, :, 0], GRAY)


def test_palette_png_gives_palette_colours(tmp_path):
    palette = Image.fromarray(RGB).convert("P")
    palette.save(tmp_path / "palette.png")
    image = read_image(tmp_path / "palette.png")
    _expect_rgb_uint8(image)
    np.testing.assert_array_equal(image, np.asarray(palette.convert("RGB")))


def test_one_bit_png_is_0_or_255(tmp_path):
    Image.fromarray(GRAY > 100).save(tmp_path / "bits.png")
    image = read_image(tmp_path / "bits.png")
    _expect_rgb_uint8(image)
    assert set(np.unique(image)) == {0, 255}


@pytest.mark.parametrize("low, high", [(0, 4095), (1000, 1255), (0, 65535)])
def test_16bit_png_is_min_max_stretched(tmp_path, low, high):
    ramp = np.linspace(low, high, H * W).reshape(H, W).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), ramp)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    image = read_image(tmp_path / "deep.png")
    _expect_rgb_uint8(image)
    assert image.min() == 0 and image.max() == 255  # a 12-bit scan is not left nearly black
    assert np.all(np.diff(image[:, :, 0].ravel().astype(int)) >= 0)  # order of intensities kept


def test_16bit_rgb_and_constant_16bit(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.dstack([GRAY, GRAY, GRAY]).astype(np.uint16) * 200)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb16.png")[:, :, 1], GRAY)
    bgra16 = np.dstack([GRAY, GRAY, GRAY, np.full((H, W), 255, np.uint8)]).astype(np.uint16) * 257
    bgra16[:5, :5, 3] = 0
    cv2.imwrite(str(tmp_path / "rgba16.png"), bgra16)
    image = read_image(tmp_path / "rgba16.png")
    assert image[:5, :5].max() == 0 and image.max() == 255
    cv2.imwrite(str(tmp_path / "flat16.png"), np.full((H, W), 777, np.uint16))
    assert read_image(tmp_path / "flat16.png").max() == 0


def test_jpeg_with_upper_case_extension_and_space(tmp_path):
    orange = np.zeros((H, W, 3), np.uint8) + np.array([200, 90, 20], np.uint8)
    path = _save(tmp_path / "1 no.JPG", orange, quality=95)
    image = read_image(path)
    _expect_rgb_uint8(image)
    assert np.abs(image.astype(int) - orange).max() <= 3  # lossy, but the channels are in RGB order
    check_image_file(path)


def test_gray_jpeg_and_jpeg_exif_rotation(tmp_path):
    _expect_rgb_uint8(read_image(_save(tmp_path / "g.jpeg", GRAY)))
    rotated = Image.fromarray(RGB)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated.save(tmp_path / "rot.jpg", exif=exif)
    _expect_rgb_uint8(read_image(tmp_path / "rot.jpg"), shape=(W, H, 3))


def test_trailing_bytes_after_the_end_marker_are_accepted(tmp_path):
    # Some cameras and tools append data after the image; only a missing end marker means "cut off".
    for suffix in (".jpg", ".png"):
        data = cv2.imencode(suffix, RGB)[1].tobytes()
        (tmp_path / f"tail{suffix}").write_bytes(data + bytes(5000))
        assert read_image(tmp_path / f"tail{suffix}").shape == (H, W, 3)
    exif = Image.fromarray(RGB).getexif()
    exif[0x010E] = "x" * 3000  # a long EXIF description before the scan data
    Image.fromarray(RGB).save(tmp_path / "exif.jpg", exif=exif)
    data = (tmp_path / "exif.jpg").read_bytes()
    check_image_file(tmp_path / "exif.jpg")
    (tmp_path / "exif_cut.jpg").write_bytes(data[: len(data) - 300])
    with pytest.raises(BadImageError, match="truncated JPEG"):
        check_image_file(tmp_path / "exif_cut.jpg")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_jpeg_and_png_cut_anywhere_are_truncated(tmp_path, keep):
    for suffix, words in ((".jpg", "truncated JPEG"), (".png", "truncated PNG")):
        data = cv2.imencode(suffix, RGB)[1].tobytes()
        (tmp_path / f"cut{suffix}").write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(BadImageError, match=words):
            check_image_file(tmp_path / f"cut{suffix}")


def test_png_named_jpg_is_read_by_content(tmp_path):
    # The real set has RGBA PNGs named .jpg (no/No15.jpg).
    np.testing.assert_array_equal(read_image(_save(tmp_path / "No15.jpg", RGB, format="PNG")), RGB)


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".TIFF"])
def test_bmp_and_tiff(tmp_path, suffix):
    np.testing.assert_array_equal(read_image(_save(tmp_path / f"x{suffix}", RGB)), RGB)


def _bad_file(tmp_path, kind):
    """Write one bad file of the given kind and return (path, expected words in the reason)."""
    jpeg = cv2.imencode(".jpg", RGB)[1].tobytes()
    png = cv2.imencode(".png", RGB)[1].tobytes()
    if kind == "empty":
        path, words = tmp_path / "empty.jpg", "empty"
        path.write_bytes(b"")
    elif kind == "text":
        path, words = tmp_path / "notes renamed.jpg", "not an image"
        path.write_text("this is not a picture\n")
    elif kind == "truncated_jpeg":
        path, words = tmp_path / "cut.jpg", "truncated JPEG"
        path.write_bytes(jpeg[: len(jpeg) // 2])
    elif kind == "truncated_png":
        path, words = tmp_path / "cut.png", "truncated PNG"
        path.write_bytes(png[: len(png) // 2])
    elif kind == "truncated_bmp":
        path, words = tmp_path / "cut.bmp", "truncated BMP"
        path.write_bytes(cv2.imencode(".bmp", RGB)[1].tobytes()[:500])
    elif kind == "unknown_extension":
        path, words = tmp_path / "scan.gif", "not an image file ('.gif'"
        path.write_bytes(png)
    elif kind == "no_extension":
        path, words = tmp_path / "README", "no extension"
        path.write_bytes(png)
    elif kind == "damaged":  # right signature and end marker, garbage in between
        path, words = tmp_path / "damaged.png", "cannot be decoded"
        path.write_bytes(png[:8] + bytes(200) + png[-12:])
    elif kind == "unreadable":  # a dangling link cannot be opened (permissions do not stop root)
        path, words = tmp_path / "gone.jpg", "cannot be read"
        path.symlink_to(tmp_path / "does-not-exist.jpg")
    return path, words


BAD_KINDS = ["empty", "text", "truncated_jpeg", "truncated_png", "truncated_bmp", "unknown_extension",
             "no_extension", "damaged", "unreadable"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_raise_one_line_error(tmp_path, kind):
    path, words = _bad_file(tmp_path, kind)
    for function in (check_image_file, read_image):
        with pytest.raises(BadImageError) as info:
            function(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ")
        assert words in message
        assert "\n" not in message
        assert info.value.path == str(path) and info.value.reason in message


def test_bad_image_error_is_a_value_error():
    assert issubclass(BadImageError, ValueError)
    assert str(BadImageError("a b.jpg", "empty file")) == "a b.jpg: empty file"


def test_extensions_are_lower_case_with_dot():
    assert {".jpg", ".jpeg", ".png"} <= IMAGE_EXTENSIONS
    assert all(s.startswith(".") and s == s.lower() for s in IMAGE_EXTENSIONS)


def test_to_gray():
    gray = to_gray(RGB)
    assert gray.dtype == np.uint8 and gray.shape == (H, W)
    np.testing.assert_array_equal(gray, cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY))
    np.testing.assert_array_equal(to_gray(np.dstack([GRAY] * 3)), GRAY)
    np.testing.assert_array_equal(to_gray(GRAY), GRAY)
    with pytest.raises(ValueError, match="uint8"):
        to_gray(RGB.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((4, 4, 2), np.uint8))
