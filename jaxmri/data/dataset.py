"""Loading a folder of class folders into memory, checked, cropped and grouped (paper Section 2.1).

Layout: one sub-folder per class, as in the Kaggle set::

    brain_tumor_dataset/
        yes/  Y1.jpg, Y16.JPG, ...      -> label 1 (tumor)
        no/   1 no.jpeg, No15.jpg, ...  -> label 0 (no tumor)

Every file is read and checked before anything is returned, and ALL bad files are reported at once,
one line each, so a training run never dies halfway through an epoch. Images are decoded, cropped to
the brain (``jaxmri.data.crop``) and resized once; epochs then only index ``ImageSet.images``.

    >>> data = load_image_folder("../shared/data/brain_tumor_dataset")   # doctest: +SKIP
    >>> print(data.summary())                                            # doctest: +SKIP
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jaxmri.data.crop import brain_crop
from jaxmri.data.duplicates import (NEAR_DUPLICATE_DISTANCE, content_hash, count_groups, duplicate_groups,
                                    perceptual_hash)
from jaxmri.data.images import load_image_bytes, to_gray
from jaxmri.errors import BadImageError, DataError

# Folder names inside a data root that are not classes (write_phantom_dataset puts masks there).
RESERVED_FOLDERS = frozenset({"masks"})
# Files some operating systems drop into every folder; hidden files (".DS_Store") are skipped too.
IGNORED_FILES = frozenset({"thumbs.db", "desktop.ini"})


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Decoded, brain-cropped, resized images of a class-folder dataset, held in memory.

    ``images`` is ``uint8 (N, S, S, C)`` in 0..255 with ``C = 3`` (RGB) or ``1`` (gray); ``boxes`` are
    the crops ``(x0, y0, x1, y1)`` (ends exclusive) in each ORIGINAL image, whose ``(H, W)`` is in
    ``sizes``; ``groups`` are duplicate-group ids (byte-identical or perceptual near-duplicates) and
    ``exact_groups`` the same from byte-identity alone. ``paths`` are relative to ``root``.
    """

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    images: np.ndarray
    boxes: np.ndarray
    sizes: np.ndarray
    groups: np.ndarray
    skipped: tuple[tuple[str, str], ...] = ()
    exact_groups: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> str:
        """Several lines: image count and per-class counts, sizes, duplicate groups, skipped files."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        per_class = ", ".join(f"{name} (label {i}): {int(c)}"
                              for i, (name, c) in enumerate(zip(self.class_names, counts)))
        lines = [f"{_count(len(self), 'image')} in {self.root} ({_count(len(self.class_names), 'class')}): "
                 f"{per_class}"]
        if len(self):
            h, w = self.sizes[:, 0], self.sizes[:, 1]
            distinct = len({(int(a), int(b)) for a, b in self.sizes})
            shape = "x".join(str(d) for d in self.images.shape[1:])
            lines.append(f"original sizes: {distinct} distinct, height {h.min()}-{h.max()}, width {w.min()}-{w.max()}; "
                         f"cropped to the brain and resized to {shape}")
        n_groups, _, _ = count_groups(self.groups)
        line = f"duplicate groups: {_count(n_groups, 'group')} for {_count(len(self), 'image')}"
        if self.exact_groups is not None:
            n_exact, k_multi, k_files = count_groups(self.exact_groups)
            line += (f" ({_count(k_multi, 'group')} of byte-identical files covering {_count(k_files, 'file')}; "
                     f"{_count(n_exact - n_groups, 'more merge')} of perceptual near-duplicates, pHash distance "
                     f"<= {NEAR_DUPLICATE_DISTANCE} bits)")
        lines.append(line)
        lines.append(f"skipped {_count(len(self.skipped), 'unreadable file')}" + (":" if self.skipped else ""))
        lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else ('es' if noun.endswith('s') else 's')}"


def _class_labels(names: list[str]) -> dict[str, int]:
    """``no`` -> 0 and ``yes`` -> 1 when both exist (any case); other folders follow in sorted order."""
    lower = {n.lower(): n for n in names}
    first = [lower["no"], lower["yes"]] if "no" in lower and "yes" in lower else []
    ordered = first + sorted(n for n in names if n not in first)
    return {name: i for i, name in enumerate(ordered)}


def scan_class_folders(root) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """List the files of each class folder of ``root``.

    Returns ``(paths, labels, class_names)``: ``root / folder / name`` paths sorted by (folder, name),
    ``int32 (N,)`` labels and the folder name of each label. Hidden files and folders, ``masks/`` and
    OS clutter (Thumbs.db, desktop.ini) are ignored; every other file is returned, including files
    without an image extension, so that the loader reports them. Raises ``DataError`` (all problems,
    one line each) when ``root`` is missing or not a folder, has no class folders, or a class folder
    is empty or holds a sub-folder.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist; pass a folder with one sub-folder per class "
                        "(e.g. yes/ and no/).")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a folder; pass the folder that holds the class folders "
                        "(e.g. yes/ and no/).")
    visible = [p for p in root.iterdir() if not p.name.startswith(".")]
    class_dirs = sorted((p for p in visible if p.is_dir() and p.name.lower() not in RESERVED_FOLDERS),
                        key=lambda p: p.name)
    if not class_dirs:
        loose = sum(1 for p in visible if p.is_file())
        hint = f" (it holds {_count(loose, 'loose file')}; move them into class folders)" if loose else ""
        raise DataError(f"{root}: no class folders found{hint}; expected one sub-folder per class, "
                        "e.g. yes/ (tumor) and no/ (no tumor).")
    mapping = _class_labels([p.name for p in class_dirs])
    class_names = tuple(sorted(mapping, key=mapping.get))
    if len(class_names) > 1 and {n.lower() for n in class_names} != {"no", "yes"}:
        print("class folders -> labels: " + ", ".join(f"{n}={mapping[n]}" for n in class_names), file=sys.stderr)

    paths, labels, problems = [], [], []
    for folder in class_dirs:
        entries = sorted((p for p in folder.iterdir()
                          if not p.name.startswith(".") and p.name.lower() not in IGNORED_FILES),
                         key=lambda p: p.name)
        for p in entries:
            if p.is_dir():
                problems.append(f"{p.relative_to(root).as_posix()}: folder inside a class folder; "
                                "move its images up into the class folder or remove it")
        files = [p for p in entries if not p.is_dir()]
        if not files:
            problems.append(f"{folder.relative_to(root).as_posix()}/: class folder has no files; "
                            "add images or remove the folder")
        paths += files
        labels += [mapping[folder.name]] * len(files)
    if problems:
        raise DataError("\n".join(problems))
    return paths, np.array(labels, dtype=np.int32), class_names


def load_image_folder(root, *, image_size: int = 224, channels: int = 3, skip_unreadable: bool = False,
                      progress: bool = True) -> ImageSet:
    """Read, check, crop and resize every image under ``root``'s class folders.

    ``image_size``: side ``S`` of the square output (224 in the paper); ``channels``: 3 keeps RGB, 1
    converts to gray. Each file is read once: checked (extension, empty, signature, truncation),
    decoded (``jaxmri.data.images``), cropped to the brain and resized (``jaxmri.data.crop``), and hashed for
    duplicate groups (``jaxmri.data.duplicates``). Bad files are collected; at the end a ``DataError``
    lists each as ``"<relative path>: <reason>"`` plus a last line saying what to do (a single bad file
    is one line: ``"<root>/<relative path>: <reason>; <what to do>"``), unless
    ``skip_unreadable`` is True, in which case they are left out and listed in ``ImageSet.skipped``
    and on stderr. ``progress`` shows a tqdm bar on stderr.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels}.")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")
    root = Path(root)
    paths, labels, class_names = scan_class_folders(root)

    keep, bad = [], []
    images, boxes, sizes, byte_hashes, phashes = [], [], [], [], []
    for i, path in enumerate(tqdm(paths, desc="loading images", unit="img", disable=not progress,
                                  file=sys.stderr)):
        relative = path.relative_to(root).as_posix()
        try:
            data, rgb = load_image_bytes(path)
        except BadImageError as err:
            bad.append((relative, err.reason))
            continue
        gray = to_gray(rgb)
        image, box = brain_crop(rgb, int(image_size), channels, gray)
        keep.append(i)
        images.append(image)
        boxes.append(box)
        sizes.append(rgb.shape[:2])
        byte_hashes.append(content_hash(data))
        phashes.append(perceptual_hash(gray))

    if len(bad) == 1 and not skip_unreadable:  # one problem, one line
        relative, reason = bad[0]
        raise DataError(f"{root / relative}: {reason}; fix or remove it, or pass --skip-unreadable "
                        f"(skip_unreadable=True) to use the other {_count(len(paths) - 1, 'file')}.")
    if bad and not skip_unreadable:
        lines = [f"{relative}: {reason}" for relative, reason in bad]
        lines.append(f"{len(bad)} of {len(paths)} files in {root} cannot be used: fix or remove them, "
                     "or pass --skip-unreadable (skip_unreadable=True) to use the other files.")
        raise DataError("\n".join(lines))
    labels = labels[keep]
    empty = [name for i, name in enumerate(class_names) if not np.any(labels == i)]
    if empty:  # the error names one bad file of each such folder, so the listing below is not needed
        first = {name: next(b for b in bad if b[0].startswith(f"{name}/")) for name in empty}
        raise DataError("\n".join(f"{root / name}/: no readable images left after skipping unreadable files (such as "
                                  f"{first[name][0]}: {first[name][1]}); fix them, add images or remove the folder"
                                  for name in empty))
    if bad:
        listing = "\n".join(f"  {relative}: {reason}" for relative, reason in bad)
        print(f"skipped {_count(len(bad), 'unreadable file')}:\n{listing}", file=sys.stderr)
    size = int(image_size)
    return ImageSet(
        root=root,
        paths=tuple(paths[i].relative_to(root).as_posix() for i in keep),
        labels=labels,
        class_names=class_names,
        images=np.stack(images) if images else np.zeros((0, size, size, channels), np.uint8),
        boxes=np.array(boxes, dtype=np.int32).reshape(-1, 4),
        sizes=np.array(sizes, dtype=np.int32).reshape(-1, 2),
        groups=duplicate_groups(byte_hashes, phashes),
        skipped=tuple(bad),
        exact_groups=duplicate_groups(byte_hashes, phashes, max_distance=-1),
    )
