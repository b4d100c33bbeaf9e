"""From the model's square crop back to the scan's own pixels, and the PNG files ``predict`` writes.

Every image was cropped to its brain box ``(x0, y0, x1, y1)`` (exclusive ends) in the ORIGINAL image
of size ``(H, W)`` and resized to ``S x S`` (``jaxmri.data.crop.brain_crop``). ``paste_back`` undoes
that: it resizes an ``S x S`` map to the box's own width and height and places it in an ``H x W``
array of zeros, so a predicted mask lines up with the input file pixel for pixel.
"""

from pathlib import Path

import cv2
import numpy as np


def paste_back(square: np.ndarray, box, size) -> np.ndarray:
    """float32 (H, W): ``square`` (S, S) resized bilinearly into ``box`` of an (H, W) = ``size`` image, 0 outside."""
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = (int(v) for v in size)
    out = np.zeros((height, width), np.float32)
    out[y0:y1, x0:x1] = cv2.resize(np.asarray(square, np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A single-channel 0/255 PNG of a boolean (H, W) mask."""
    _write_png(path, np.where(mask, 255, 0).astype(np.uint8))


def write_overlay(path: Path, rgb: np.ndarray, mask: np.ndarray) -> None:
    """The input (uint8 (H, W, 3) RGB) with the mask's outline drawn in red, as a PNG."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(max(rgb.shape[:2]) / 300))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    cv2.drawContours(bgr, contours, -1, (0, 0, 255), thickness)
    _write_png(path, bgr)


def write_heatmap(path: Path, rgb: np.ndarray, heat: np.ndarray, peak: tuple[int, int]) -> None:
    """The input blended with a jet-coloured ``heat`` (H, W) in [0, 1] and a marker at ``peak`` (x, y)."""
    colour = cv2.applyColorMap(np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    bgr = cv2.addWeighted(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 0.6, colour, 0.4, 0.0)
    size = max(4, round(max(rgb.shape[:2]) / 40))
    cv2.drawMarker(bgr, (int(peak[0]), int(peak[1])), (255, 255, 255), cv2.MARKER_CROSS, size, max(1, size // 6))
    _write_png(path, bgr)


def peak_xy(heat: np.ndarray) -> tuple[int, int]:
    """(x, y) of the maximum of an (H, W) map (the first one in row order on ties)."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(x), int(y)
