# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 1: the data pipeline (paper Section 2.1)
#
# Before any model is trained, the paper (Blue, Burkhart & Manuel 2024, Section 2.1) does four things
# with the Kaggle brain-MRI set:
#
# 1. checks that no image is corrupted and no image id is duplicated;
# 2. copes with the mix of RGB and grayscale files and the many resolutions;
# 3. crops every image to "the extreme points of the height and width of the borders of the brain"
#    with OpenCV (their Figure 1);
# 4. splits the data into training and test images (their Table 1).
#
# This lesson runs each step with `jaxmri` and shows *why* each one is written the way it is. The one
# finding that changes results: the public set contains many copies of the same scan, so the paper's
# random split puts copies of training images into the test set. We measure how often, and fix it with a
# split that keeps every duplicate group on one side.
#
# Everything here is imported from `jaxmri`; this file only adds prose, plots and exercises. Run it with
# `python lessons/01_data_pipeline.py` or open it as a notebook (see `lessons/README.md`).

# %% [markdown]
# ## Setup
#
# The lesson uses the real Kaggle data when it finds it (`$JAXMRI_DATA`, or `../shared/data` next to the
# repository, holding `brain_tumor_dataset/`); otherwise it writes a synthetic *phantom* set
# (`jaxmri.data.phantom`) into a temporary folder. Phantoms are drawn to look like the scans (a skull ring,
# a textured brain, specks and letters in the background, bright tumors), so every step below does real
# work on them. `JAXMRI_LESSON_QUICK=1` makes everything small and fast; figures go to
# `$JAXMRI_LESSON_FIGURES` (default `lessons/figures/`).

# %%
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402  (pillow comes with matplotlib: a palette PNG below, small figure files)

from jaxmri.data.crop import brain_box, crop_resize  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.duplicates import (NEAR_DUPLICATE_DISTANCE, count_groups, hamming_distance,  # noqa: E402
                                    perceptual_hash)
from jaxmri.data.images import image_format, read_image, to_gray  # noqa: E402
from jaxmri.data.phantom import make_phantom  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402
from jaxmri.errors import DataError  # noqa: E402

from lesson_setup import QUICK, add_phantom_copies, lesson_data, save  # noqa: E402
IMAGE_SIZE = 64 if QUICK else 224  # the paper resizes to 224 x 224

DATA, SOURCE, WORK = lesson_data("lesson01")

# %% [markdown]
# ## 1. One representation for every image mode
#
# The paper notes that "some came in RGB format, while others were already converted to gray scale".
# The public set is messier than that: 217 RGB, 30 grayscale, 5 RGBA and 1 palette file, PNGs named
# `.jpg`, upper-case extensions and spaces in names. `jaxmri.data.images.read_image` turns every one of them
# into the same thing, `uint8 (H, W, 3)` RGB in 0..255, so nothing downstream has to care:
#
# - files are recognised by their first bytes, not their extension;
# - gray is copied into R, G and B; palettes are expanded;
# - transparency is composited on **black**, because a transparent border that became white would look
#   like part of the head to the brain crop;
# - 16-bit images are stretched to 0..255 (a 12-bit scanner range divided by 257 would be almost black).
#
# To see it, we save one phantom in six different ways and read each back.

# %%
modes = Path(WORK.name) / "modes"
modes.mkdir()
rgb = make_phantom(1, 0, seed=7, size_range=(120, 160))[0][0]
gray = rgb[:, :, 0]
bgr = rgb[:, :, ::-1]  # OpenCV writes BGR
cv2.imwrite(str(modes / "rgb.png"), bgr)
cv2.imwrite(str(modes / "gray.png"), gray)
rgba = np.dstack([bgr, np.full(gray.shape, 255, np.uint8)])
rgba[:, :12, 3] = 0  # a transparent strip on the left
rgba[:, :12, :3] = 255  # ... whose hidden colour is white
cv2.imwrite(str(modes / "rgba.png"), rgba)
Image.fromarray(rgb).convert("P").save(modes / "palette.png")
cv2.imwrite(str(modes / "twelve_bit.png"), gray.astype(np.uint16) * 16)  # values 0..4080 in a 16-bit file
(modes / "png named.JPG").write_bytes(cv2.imencode(".png", bgr)[1].tobytes())  # a PNG with a JPEG name

for path in sorted(modes.iterdir()):
    image = read_image(path)
    print(f"{path.name:16s} stored as {image_format(path.read_bytes()):4s} -> {image.dtype} {image.shape}, "
          f"values {image.min()}..{image.max()}, left strip mean {image[:, :12].mean():5.1f}")

# %% [markdown]
# Every file comes back with the same dtype and shape. The RGBA file's transparent strip reads as black
# (mean near 0), not as the white hidden under it.
#
# ## 2. Validate every file before training
#
# The paper checked for "corrupted images". `jaxmri.data.dataset.load_image_folder` reads and checks every
# file *before* returning anything, and reports **all** bad files at once, one line each, so a run never
# dies in epoch 37 on a half-downloaded JPEG. We build a small messy folder: a few good phantoms plus an
# empty file, a cut-off JPEG, a text file and a PNG with a `.jpg` name (which is fine).

# %%
messy = Path(WORK.name) / "messy"
images, labels, _ = make_phantom(3, 4, seed=1, size_range=(100, 140))
for i, (image, label) in enumerate(zip(images[:6], labels[:6])):
    folder = messy / ("yes" if label else "no")
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"scan {i}.png"), image[:, :, ::-1])
jpeg = cv2.imencode(".jpg", images[0][:, :, ::-1])[1].tobytes()
(messy / "yes" / "cut off.jpg").write_bytes(jpeg[: len(jpeg) // 2])
(messy / "yes" / "empty.jpeg").write_bytes(b"")
(messy / "no" / "notes.txt").write_text("patient list")
(messy / "no" / "really a png.jpg").write_bytes(cv2.imencode(".png", images[6][:, :, ::-1])[1].tobytes())

try:
    load_image_folder(messy, image_size=64, progress=False)
except DataError as err:
    print(f"DataError:\n{err}")

# %% [markdown]
# Fix the files, or decide consciously to go on without them (`skip_unreadable=True`, the CLI's
# `--skip-unreadable`); the skipped files are then listed in the dataset's summary.

# %%
kept = load_image_folder(messy, image_size=64, skip_unreadable=True, progress=False)
print(kept.summary())

# %% [markdown]
# ## 3. Crop to the brain (Figure 1)
#
# Uncropped scans carry black margins, scanner labels and orientation letters. The paper crops to the
# brain's extreme points with OpenCV; `jaxmri.data.crop.brain_box` is that recipe (the well-known
# pyimagesearch "extreme points" one): gray, 5x5 Gaussian blur, threshold at 45, erode and dilate twice
# (small specks and letters vanish, the head survives), take the largest contour, and its leftmost,
# rightmost, top and bottom points give the box. Two deliberate differences: the box includes the
# extreme pixels, and an image with no usable contour is kept whole instead of crashing.
# `crop_resize` then cuts the box and resizes to a square (the paper's `Resize((224, 224))`, which does
# not keep the aspect ratio).
#
# Like the paper's Figure 1: originals with the box drawn in red on top, the crops below.

# %%
rng = np.random.default_rng(3)
examples = []
for folder in ("yes", "no"):
    files = sorted(p for p in (DATA / folder).iterdir() if p.is_file())
    examples += [files[i] for i in rng.choice(len(files), 3, replace=False)]

fig, axes = plt.subplots(2, 6, figsize=(10, 3.9))
for col, path in enumerate(examples):
    image = read_image(path)
    x0, y0, x1, y1 = brain_box(image)
    axes[0, col].imshow(image)
    axes[0, col].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
    axes[0, col].set_title(f"{path.parent.name}/{path.name}\n{image.shape[1]}x{image.shape[0]}", fontsize=8)
    axes[1, col].imshow(crop_resize(image, (x0, y0, x1, y1), IMAGE_SIZE))
    axes[1, col].set_title(f"cropped, {IMAGE_SIZE}x{IMAGE_SIZE}", fontsize=8)
for ax in axes.ravel():
    ax.set_axis_off()
fig.suptitle("Figure 1 again: uncropped (top) and cropped to the brain (bottom)", fontsize=10)
fig.tight_layout()
save(fig, "01_brain_crop.png")

# %% [markdown]
# The whole folder goes through the same steps in one call. Each image is decoded, checked, cropped and
# resized once and kept in memory, so an epoch later only indexes an array. The summary also reports the
# duplicate groups that the next section is about.

# %%
if SOURCE == "phantom data":
    # Phantoms are all different; the real set is not. Give the phantom set the same kinds of copies
    # (byte-identical files, and re-saved smaller JPEGs) so that the rest of the lesson has work to do.
    add_phantom_copies(DATA)  # lesson_setup.py: 7 byte-identical copies and 5 re-saved JPEGs per class
    print("added 14 byte-identical copies and 10 re-saved JPEG copies to the phantom set")

data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
print(data.summary())
print(f"images: {data.images.dtype} {data.images.shape}; labels: {np.bincount(data.labels)} for {data.class_names}")

# %% [markdown]
# ## 4. Duplicates
#
# The paper checked for "duplicate image ids". Ids are file names, and names say nothing about content:
# the public set holds 22 groups of byte-identical files under different names, plus scans that were
# re-saved, resized or re-contrasted. `jaxmri.data.duplicates` finds both kinds:
#
# - **exact**: the SHA-256 of the file bytes;
# - **near**: a 64-bit perceptual hash (pHash: shrink to 32x32, 2-D DCT, keep the 8x8 lowest frequencies,
#   one bit per coefficient above the median). Re-saving or resizing flips only a few bits. Two images
#   at most `NEAR_DUPLICATE_DISTANCE` bits apart are treated as the same picture, and union-find joins
#   chains of such pairs into groups.
#
# Below, the largest groups found, with each member's pHash distance to the first one.

# %%
n_groups, n_multi, n_in_multi = count_groups(data.groups)
print(f"{len(data)} images form {n_groups} groups; {n_multi} groups hold {n_in_multi} images "
      f"(threshold {NEAR_DUPLICATE_DISTANCE} bits)")
sizes = np.bincount(data.groups)
largest = [g for g in np.argsort(-sizes, kind="stable")[:3] if sizes[g] > 1]
columns = max(sizes[largest]) if largest else 1
fig, axes = plt.subplots(max(len(largest), 1), columns, figsize=(1.8 * columns, 2.0 * max(len(largest), 1)),
                         squeeze=False)
for row, group in enumerate(largest):
    members = np.flatnonzero(data.groups == group)
    first = read_image(data.root / data.paths[members[0]])
    for col, i in enumerate(members):
        image = read_image(data.root / data.paths[i])
        same_bytes = data.exact_groups[i] == data.exact_groups[members[0]]
        distance = hamming_distance(perceptual_hash(to_gray(first)), perceptual_hash(to_gray(image)))
        axes[row, col].imshow(image)
        note = "first" if col == 0 else ("same bytes" if same_bytes else f"pHash {distance} bits")
        axes[row, col].set_title(f"{data.paths[i]}\n{note}", fontsize=7)
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
save(fig, "01_duplicate_groups.png")

# %% [markdown]
# ## 5. Splitting: a random split leaks duplicates into the test set
#
# Table 1 of the paper holds out about 27 % of the images for testing, chosen at random. With duplicates
# in the data, a random split very likely places one copy of a scan in training and another in the test
# set. The model has then *seen* those test images, and test accuracy is inflated.
#
# `jaxmri.data.split.grouped_stratified_split` assigns whole duplicate groups at once, and takes the same
# fraction of each class (stratified), so every part keeps the class balance. It also makes the
# validation part that the paper's Conclusion asks for. We count, for 200 different seeds, how many test
# images have a copy in the training part under each scheme.

# %%
def leaked(train: np.ndarray, test: np.ndarray, groups: np.ndarray) -> int:
    """Number of test images whose duplicate group also has a member in the training part."""
    return int(np.isin(groups[test], groups[train]).sum())


n = len(data)
n_test = round(0.27 * n)
naive, grouped = [], []
for seed in range(200):
    order = np.random.default_rng(seed).permutation(n)
    naive.append(leaked(order[n_test:], order[:n_test], data.groups))
    parts = grouped_stratified_split(data.labels, data.groups, test_fraction=0.27, val_fraction=0.0, seed=seed)
    grouped.append(leaked(parts["train"], parts["test"], data.groups))
naive, grouped = np.array(naive), np.array(grouped)
print(f"random split:  {naive.mean():.1f} of {n_test} test images have a copy in training on average "
      f"(min {naive.min()}, max {naive.max()})")
print(f"grouped split: at most {grouped.max()} leaked test images in any of the 200 seeds")

fig, ax = plt.subplots(figsize=(6, 3.2))
bins = np.arange(0, max(naive.max(), 1) + 2) - 0.5
ax.hist(naive, bins=bins, color="tab:red", alpha=0.8, label="random split (the paper)")
ax.hist(grouped, bins=bins, color="tab:green", alpha=0.8, label="grouped stratified split")
ax.set(xlabel="test images with a copy in the training set", ylabel="seeds (of 200)",
       title=f"Leakage over 200 splits ({SOURCE}, {n} images)")
ax.legend()
fig.tight_layout()
save(fig, "01_split_leakage.png")

# %% [markdown]
# The split that the training commands use (`python -m jaxmri.train`, seed 0) has a validation part as
# well. Per class, like Table 1:

# %%
split = grouped_stratified_split(data.labels, data.groups, test_fraction=0.27, val_fraction=0.15, seed=0)
print(f"{'class':>6s} " + " ".join(f"{part:>6s}" for part in split))
for c, name in enumerate(data.class_names):
    print(f"{name:>6s} " + " ".join(f"{int(np.sum(data.labels[idx] == c)):6d}" for idx in split.values()))
print(f"leaked: train->val {leaked(split['train'], split['val'], data.groups)}, "
      f"train->test {leaked(split['train'], split['test'], data.groups)}")

# %% [markdown]
# The public set has 253 files (155 tumor, 98 healthy); the paper reports 273 images (118 healthy), so
# its copy differed. Its Table 1 is also not stratified: 31 of 155 tumor images (20 %) but 41 of 118
# healthy ones (35 %) are test images.
#
# ## Exercises
#
# Each checker recomputes the answer its own way; import them with
# `from checks.lesson_01 import check_exact_only_leak, check_dark_box, check_hash_neighbour`.
#
# 1. Group with byte-identity only (`data.exact_groups`, what
#    `jaxmri.data.duplicates.duplicate_groups(..., max_distance=-1)` gives): split with those groups
#    (`grouped_stratified_split(data.labels, data.exact_groups, test_fraction=0.27, val_fraction=0.0,
#    seed=seed)` for seeds 0..199) and count with `leaked(...)` and the perceptual groups `data.groups` how
#    many near-duplicates still reach the test set. Check the mean with
#    `check_exact_only_leak(data, mean_leaked)`. You should see roughly 4 leaked test images per split
#    on this lesson's phantoms and over 10 on the real set: what does that say about checking for
#    duplicates by file hash alone?
# 2. Darken a scan, `(image * f).astype(np.uint8)` for `f` = 1.0, 0.95, ..., 0.05, and find the largest
#    `f` at which `brain_box` cannot find a head any more. Check it with `check_dark_box(image, f)`. You
#    should see roughly `f` = 0.15 to 0.25 and the box `(0, 0, W, H)`: why is keeping the whole image
#    safer than raising an error in the middle of a dataset?
# 3. Build a 1-nearest-neighbour classifier on perceptual hashes (each test image gets the label of the
#    training image with the smallest Hamming distance, ties to the first as `np.argmin` does). Average
#    its test accuracy over seeds 0..9 on a random split (the first `round(0.27 * n)` images of
#    `np.random.default_rng(seed).permutation(n)` are the test set) and on the grouped split
#    (`val_fraction=0.0`). Check both with `check_hash_neighbour(data, random_accuracy, grouped_accuracy)`.
#    You should see the random split score roughly 0.1 higher than the grouped one. Which number would
#    you believe?
