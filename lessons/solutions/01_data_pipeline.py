# %% [markdown]
# # Lesson 1, worked solutions
#
# Run it like the lesson (`python lessons/solutions/01_data_pipeline.py`); each exercise ends with its
# checker's `exercise K: ok` line. On phantoms it first adds the same copies the lesson adds (byte-identical
# files and re-saved JPEGs), so that there are duplicates to find.

# %%
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lessons/: lesson_setup and checks

import numpy as np  # noqa: E402

from checks.lesson_01 import check_dark_box, check_exact_only_leak, check_hash_neighbour  # noqa: E402
from jaxmri.data.crop import brain_box  # noqa: E402
from jaxmri.data.dataset import load_image_folder  # noqa: E402
from jaxmri.data.duplicates import count_groups, hamming_distance, perceptual_hash  # noqa: E402
from jaxmri.data.images import read_image, to_gray  # noqa: E402
from jaxmri.data.split import grouped_stratified_split  # noqa: E402

from lesson_setup import QUICK, add_phantom_copies, lesson_data  # noqa: E402

IMAGE_SIZE = 64 if QUICK else 224
DATA, SOURCE, WORK = lesson_data("lesson01-solutions")
if SOURCE == "phantom data":  # the lesson's copies: 7 byte-identical and 5 re-saved JPEGs per class
    add_phantom_copies(DATA)
data = load_image_folder(DATA, image_size=IMAGE_SIZE, progress=False)
print(data.summary())

# %% [markdown]
# ## 1. Byte-identity alone
#
# Split by `data.exact_groups` (what a file-hash check gives), then count leaks with the perceptual
# groups `data.groups`: every re-saved, resized or re-contrasted copy that the file hash cannot see and
# that lands on the other side of the split is a test image the model has, in effect, trained on.

# %%
def leaked(train, test, groups):
    return int(np.isin(groups[test], groups[train]).sum())


counts = []
for seed in range(200):
    parts = grouped_stratified_split(data.labels, data.exact_groups, test_fraction=0.27, val_fraction=0.0, seed=seed)
    counts.append(leaked(parts["train"], parts["test"], data.groups))
n_exact, _, _ = count_groups(data.exact_groups)
n_near, _, _ = count_groups(data.groups)
print(f"{n_exact} byte-identity groups vs {n_near} perceptual groups; exact-only split leaks "
      f"{np.mean(counts):.2f} test images on average (max {max(counts)})")
check_exact_only_leak(data, np.mean(counts))

# %% [markdown]
# A file hash only catches byte-for-byte copies. One re-save as JPEG changes every byte but almost no
# pHash bit, so a split that trusts file hashes still leaks; the perceptual groups are needed.
#
# ## 2. A scan too dark for the crop
#
# Darken one scan step by step. Once the blurred brain falls under the threshold 45, erosion leaves no
# contour (or only specks under `MIN_BOX_FRACTION` of the image), and `brain_box` returns the whole
# image `(0, 0, W, H)`. Keeping the image whole is safe: the model sees a little more background, but
# one odd scan in thousands neither crashes a long data pass nor gets silently cut to a wrong box.

# %%
image = read_image(sorted((DATA / "yes").iterdir())[0])
height, width = image.shape[:2]
factor = next(f for f in (round(0.05 * k, 2) for k in range(20, 0, -1))
              if brain_box((image * f).astype(np.uint8)) == (0, 0, width, height))
print(f"original box {brain_box(image)}; at factor {factor}: {brain_box((image * factor).astype(np.uint8))}")
check_dark_box(image, factor)

# %% [markdown]
# ## 3. A classifier that only remembers pictures
#
# 1-nearest-neighbour on the 64-bit pHash learns nothing about tumors: it finds the most similar
# training picture. Where a copy of the test image sits in the training part, it finds that copy and
# its label, so the random split rewards memorising duplicates. Believe the grouped number.

# %%
hashes = [perceptual_hash(to_gray(read_image(data.root / p))) for p in data.paths]


def nearest_hash_accuracy(train, test):
    right = 0
    for i in test:
        distances = [hamming_distance(hashes[i], hashes[j]) for j in train]
        right += data.labels[train[int(np.argmin(distances))]] == data.labels[i]
    return right / len(test)


n, n_test = len(data), round(0.27 * len(data))
random_acc, grouped_acc = [], []
for seed in range(10):
    order = np.random.default_rng(seed).permutation(n)
    random_acc.append(nearest_hash_accuracy(order[n_test:], order[:n_test]))
    parts = grouped_stratified_split(data.labels, data.groups, test_fraction=0.27, val_fraction=0.0, seed=seed)
    grouped_acc.append(nearest_hash_accuracy(parts["train"], parts["test"]))
print(f"random split {np.mean(random_acc):.3f}, grouped split {np.mean(grouped_acc):.3f} (10 seeds)")
check_hash_neighbour(data, np.mean(random_acc), np.mean(grouped_acc))
