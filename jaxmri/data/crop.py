"""Cropping each MRI to the brain's extreme points, then resizing (paper Section 2.1, Figure 1).

The paper crops "to only include the extreme points of the height and width of the borders of the
brain" with OpenCV. This is the well-known pyimagesearch recipe ("Finding extreme points in contours
with OpenCV") used by the Kaggle notebooks for this dataset:

1. gray image, 5x5 Gaussian blur (removes pixel noise that would split the head outline);
2. binary threshold at 45 (MRI background is near black, skull and tissue are brighter);
3. erode twice, dilate twice (removes small bright specks such as scanner labels, keeps the head);
4. the largest external contour is the head; its extreme left/right/top/bottom points give the box.

Differences from the recipe, on purpose: the box's ends are exclusive and INCLUDE the extreme pixels
(the recipe's ``image[top:bottom, left:right]`` drops the last row and column), and when there is no
usable contour (a black or nearly empty image) the whole image is kept instead of crashing.

Boxes are ``(x0, y0, x1, y1)`` in the ORIGINAL image's pixels, ends exclusive, so the crop is
``image[y0:y1, x0:x1]`` and a prediction on the crop can be pasted back at the input's own size.
"""

from __future__ import annotations

import cv2
import numpy as np

from jaxmri.data.images import to_gray

BLUR_KERNEL = (5, 5)
THRESHOLD = 45
MORPH_ITERATIONS = 2
# A "head" narrower or lower than this fraction of the image is a speck or a label, not a brain.
MIN_BOX_FRACTION = 0.05


def brain_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """The brain's bounding box ``(x0, y0, x1, y1)`` (ends exclusive) in the image's own pixels.

    ``image``: ``uint8`` RGB ``(H, W, 3)`` or gray ``(H, W)``/``(H, W, 1)`` in 0..255.
    Returns ``(0, 0, W, H)`` (the whole image) when no contour survives thresholding and erosion, or
    when the largest one is smaller than ``MIN_BOX_FRACTION`` of the image in width or height.
    """
    gray = to_gray(image)
    height, width = gray.shape
    whole = (0, 0, int(width), int(height))
    if height == 0 or width == 0:
        raise ValueError(f"brain_box got an empty image of shape {gray.shape}.")
    blurred = cv2.GaussianBlur(gray, BLUR_KERNEL, 0)
    _, binary = cv2.threshold(blurred, THRESHOLD, 255, cv2.THRESH_BINARY)
    binary = cv2.erode(binary, None, iterations=MORPH_ITERATIONS)
    binary = cv2.dilate(binary, None, iterations=MORPH_ITERATIONS)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return whole
    head = max(contours, key=cv2.contourArea)[:, 0, :]  # (K, 2) points as (x, y)
    x0, y0 = int(head[:, 0].min()), int(head[:, 1].min())  # extreme left / top points
    x1, y1 = int(head[:, 0].max()) + 1, int(head[:, 1].max()) + 1  # extreme right / bottom, exclusive
    if (x1 - x0) < MIN_BOX_FRACTION * width or (y1 - y0) < MIN_BOX_FRACTION * height:
        return whole
    return x0, y0, x1, y1


def crop_resize(image: np.ndarray, box, size: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Crop ``image[y0:y1, x0:x1]`` and resize it to ``(size, size)``.

    ``image``: ``(H, W)`` or ``(H, W, C)`` of any dtype OpenCV resizes (uint8, float32, bool masks);
    the result keeps the dtype and the channel layout, ``(size, size)`` or ``(size, size, C)``.
    Use ``cv2.INTER_AREA`` for images (averages when shrinking, the usual choice for downsizing) and
    ``cv2.INTER_NEAREST`` for masks, which then stay exactly binary (no new values are invented).
    The aspect ratio is not kept, as in the paper's ``Resize((224, 224))``.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"crop_resize expects an (H, W) or (H, W, C) array, got shape {image.shape}.")
    if int(size) < 1:
        raise ValueError(f"crop_resize size must be a positive number of pixels, got {size}.")
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = image.shape[:2]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"crop box {(x0, y0, x1, y1)} is empty or outside the {width}x{height} image; "
            "boxes are (x0, y0, x1, y1) with 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H."
        )
    crop = image[y0:y1, x0:x1]
    is_bool = crop.dtype == np.bool_
    if is_bool:  # OpenCV does not resize bool arrays
        crop = crop.view(np.uint8)
    resized = cv2.resize(np.ascontiguousarray(crop), (int(size), int(size)), interpolation=interpolation)
    if image.ndim == 3 and resized.ndim == 2:  # OpenCV drops a trailing channel axis of length 1
        resized = resized[:, :, None]
    return resized.astype(np.bool_) if is_bool else resized


def brain_crop(rgb: np.ndarray, size: int, channels: int, gray: np.ndarray | None = None) -> tuple[np.ndarray, tuple]:
    """The model input of one decoded image: ``(uint8 (size, size, channels), brain box)``.

    ``rgb`` is ``read_image``'s uint8 (H, W, 3); ``channels`` 3 keeps RGB (the classifiers), 1 takes the
    gray luma (the U-Net). Training (``load_image_folder``) and prediction both call this, so a scan is
    prepared the same way in both. ``gray`` saves recomputing the luma when the caller has it.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels}.")
    gray = to_gray(rgb) if gray is None else gray
    box = brain_box(gray)
    return crop_resize(rgb if channels == 3 else gray[:, :, None], box, int(size)), box
