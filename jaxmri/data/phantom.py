"""Synthetic brain-MRI-like images ("phantoms") with tumor masks: the default data and test fixture.

The real Kaggle set cannot ship with the package, so ``jaxmri`` falls back to phantoms when no data
folder is given, and the fast tests use them. A phantom is drawn to look like the paper's inputs
(Section 2.1, Figure 1) closely enough that the whole pipeline is exercised for real:

- a dark background with faint noise, specks along the border and sometimes a bright orientation
  letter in a corner (the brain crop must ignore these, as in the real scans);
- a bright skull ring around a textured brain ellipse with two dark ventricles, at a random size,
  aspect ratio, angle and position inside images of random height and width;
- tumor images get 1 or 2 bright blobs inside the brain, and a binary mask of exactly those pixels.

Tumors are large (15-28 % of the head's smaller radius) and as bright as the skull, like
enhancing tumors on T1-contrast or FLAIR scans, so a small CNN separates the classes within a few
epochs (a 2-conv CNN on 64x64 crops of 100 phantoms, Adam 3e-3, batch 16, reaches about 90 % on
100 fresh phantoms after 6-10 epochs). Head size, shape, angle, position and a brightness ramp vary
enough that 100 phantoms never look like perceptual-hash near-duplicates of each other (with several
hundred, a few pairs do, and are simply kept on one side of the split). Drawing 100 takes ~0.3 s.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

_LETTERS = "ARLPHF"


def _ellipse_mask(shape, center, axes, angle) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    centre = (int(round(center[0])), int(round(center[1])))
    cv2.ellipse(mask, centre, (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), angle, 0, 360, 1, -1)
    return mask.astype(bool)


def _smooth_noise(rng: np.random.Generator, shape, cell: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: coarse random grid, bicubic upsampling."""
    coarse = rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2), dtype=np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _draw_one(rng: np.random.Generator, tumor: bool, size_range) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: ``uint8 (H, W, 3)`` RGB image and ``uint8 (H, W)`` mask in {0, 1}."""
    height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    shape = (height, width)
    image = (6.0 + 3.0 * rng.standard_normal(shape, dtype=np.float32)).clip(0, None)

    # Head: outer skull ellipse, a dark fluid gap, then the brain.
    axes = np.array([rng.uniform(0.22, 0.42) * width, rng.uniform(0.24, 0.44) * height])
    slack = np.array([width, height]) / 2 - axes - 3
    center = np.array([width, height]) / 2 + rng.uniform(-1, 1, 2) * np.maximum(slack, 0)
    angle = float(rng.uniform(-30, 30))
    skull_px = rng.uniform(0.04, 0.08) * axes.min()
    skull = _ellipse_mask(shape, center, axes, angle)
    inner = _ellipse_mask(shape, center, axes - skull_px, angle)
    brain = _ellipse_mask(shape, center, axes - 1.4 * skull_px, angle)
    image[skull] = rng.uniform(185, 230)
    image[inner] = rng.uniform(25, 45)
    # Tissue: a coil bias field (a brightness ramp across the head, as real scans have) plus blotches
    # at two scales; the ramp also keeps phantoms apart in perceptual hash, so none look like copies.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = ((xs - center[0]) * np.cos(theta) + (ys - center[1]) * np.sin(theta)) / axes.max()
    tissue = (rng.uniform(80, 115) + rng.uniform(15, 30) * ramp + 12 * _smooth_noise(rng, shape, min(shape) // 5)
              + 10 * _smooth_noise(rng, shape, 12) + 6 * _smooth_noise(rng, shape, 4))
    image[brain] = tissue[brain]

    # Ventricles: a mirrored pair of dark ellipses near the middle, like the butterfly on axial slices.
    for side in (-1, 1):
        offset = np.array([side * 0.12 * axes[0], rng.uniform(-0.1, 0.1) * axes[1]])
        v_axes = (rng.uniform(0.05, 0.09) * axes[0], rng.uniform(0.18, 0.28) * axes[1])
        image[_ellipse_mask(shape, center + offset, v_axes, angle + side * 12) & brain] = rng.uniform(35, 55)

    mask = np.zeros(shape, bool)
    if tumor:
        for _ in range(int(rng.integers(1, 3))):
            radius = rng.uniform(0.15, 0.28) * axes.min()
            where = center + rng.uniform(-0.45, 0.45, 2) * axes
            blob = _ellipse_mask(shape, where, (radius * rng.uniform(0.7, 1.3), radius), float(rng.uniform(0, 180)))
            mask |= blob & brain
        image[mask] = rng.uniform(215, 245) + 8 * _smooth_noise(rng, shape, 3)[mask]

    # Border specks (removed by the crop's erosion) and sometimes an orientation letter in a corner.
    for _ in range(int(rng.integers(5, 30))):
        y = int(rng.choice([rng.integers(0, 4), rng.integers(height - 4, height), rng.integers(0, height)]))
        x = int(rng.integers(0, 4)) if rng.random() < 0.5 else int(rng.integers(width - 4, width))
        image[y, x] = rng.uniform(50, 140)
    if rng.random() < 0.5:
        letter = _LETTERS[int(rng.integers(len(_LETTERS)))]
        scale = 0.0022 * min(height, width)
        origin = (int(rng.choice([2, width - int(24 * scale) - 2])), int(rng.choice([int(26 * scale) + 2, height - 3])))
        ink = np.zeros(shape, np.uint8)
        cv2.putText(ink, letter, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 1, 1)
        image[ink > 0] = rng.uniform(150, 255)

    image = cv2.GaussianBlur(image, (3, 3), 0) + 2.0 * rng.standard_normal(shape, dtype=np.float32)
    gray = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2), mask.astype(np.uint8)


def make_phantom(n_tumor: int, n_healthy: int, *, seed: int = 0, size_range=(160, 320)):
    """Draw ``n_tumor`` tumor phantoms followed by ``n_healthy`` healthy ones.

    Returns ``(images, labels, masks)``: a list of ``uint8 (H_i, W_i, 3)`` RGB images in 0..255 whose
    height and width are drawn independently from ``size_range`` (inclusive), ``int32 (N,)`` labels
    (1 = tumor, 0 = healthy) and a list of ``uint8 (H_i, W_i)`` masks in {0, 1}, all zero for healthy
    images. Image ``i`` depends only on ``(seed, label, its index within its class)``, so asking for
    more images keeps the earlier ones unchanged.
    """
    if n_tumor < 0 or n_healthy < 0:
        raise ValueError(f"make_phantom needs non-negative counts, got n_tumor={n_tumor}, n_healthy={n_healthy}.")
    low, high = (int(v) for v in size_range)
    if not 16 <= low <= high:
        raise ValueError(f"size_range must be (low, high) with 16 <= low <= high pixels, got {size_range}.")
    images, masks, labels = [], [], []
    for label, count in ((1, n_tumor), (0, n_healthy)):
        for index in range(count):
            image, mask = _draw_one(np.random.default_rng([seed, label, index]), bool(label), (low, high))
            images.append(image)
            masks.append(mask)
            labels.append(label)
    return images, np.array(labels, dtype=np.int32), masks


def write_phantom_dataset(root, n_tumor: int = 60, n_healthy: int = 40, *, seed: int = 0) -> Path:
    """Write a phantom dataset laid out like the real one and return ``root``.

    ``root/yes/tumor_000.png ...`` (label 1), ``root/no/healthy_000.png ...`` (label 0), and
    ``root/masks/tumor_000.png ...``: one 0/255 gray PNG per tumor image, same stem and size.
    ``jaxmri.data.dataset.scan_class_folders`` treats ``masks/`` as masks, not as a class.
    """
    root = Path(root)
    images, labels, masks = make_phantom(n_tumor, n_healthy, seed=seed)
    for folder in ("yes", "no", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    counters = {0: 0, 1: 0}
    for image, label, mask in zip(images, labels, masks):
        index = counters[int(label)]
        counters[int(label)] += 1
        stem = f"tumor_{index:03d}" if label == 1 else f"healthy_{index:03d}"
        folder = "yes" if label == 1 else "no"
        if not cv2.imwrite(str(root / folder / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {root / folder / f'{stem}.png'}; check that the folder is writable.")
        if label == 1:
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask * 255)
    return root
