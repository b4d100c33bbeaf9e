"""Finding duplicate images so that copies never sit on both sides of a split.

The Kaggle set holds 22 groups of byte-identical files (47 files) and more copies that were
re-saved or resized. A random split puts copies of training images into the test set, which
inflates test accuracy. Two checks, joined with union-find into groups:

- exact: the SHA-256 of the file bytes (``content_hash``);
- near: a 64-bit DCT perceptual hash (pHash) of the decoded gray image (``perceptual_hash``);
  two images whose hashes differ in at most ``NEAR_DUPLICATE_DISTANCE`` bits are the same picture.

Why 8 bits: on the real set, every pair at distance <= 8 is visibly the same scan (re-saved,
resized, re-cropped or re-contrasted), while the closest pair of images with DIFFERENT labels is
at distance 10, and pairs at 10-12 are mostly different patients that merely look alike. With 8,
the 253 files form 199 groups, none larger than 5 and none mixing labels.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

NEAR_DUPLICATE_DISTANCE = 8
HASH_SIZE = 8  # 8x8 low-frequency DCT coefficients -> 64 bits
_DCT_SIZE = 32


def content_hash(data: bytes) -> str:
    """SHA-256 of the file's bytes as 64 hex characters; equal only for byte-identical files."""
    return hashlib.sha256(data).hexdigest()


def perceptual_hash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash (pHash) of a gray image, as a Python int in ``[0, 2**64)``.

    ``gray``: ``(H, W)`` array, any size and numeric dtype (uint8 0..255 usually). The image is shrunk
    to 32x32 (INTER_AREA), its 2-D DCT taken, and the 8x8 lowest frequencies compared with their
    median (the DC term excluded from the median): bit = coefficient > median, row-major, first
    coefficient in the highest bit. Resizing, re-compression and mild contrast changes move few bits.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.shape[0] == 0 or gray.shape[1] == 0:
        raise ValueError(f"perceptual_hash expects a non-empty (H, W) gray image, got shape {gray.shape}.")
    small = cv2.resize(gray.astype(np.float32), (_DCT_SIZE, _DCT_SIZE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming_distance(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (int(a) ^ int(b)).bit_count()


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving keeps trees flat
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def duplicate_groups(byte_hashes: list[str], phashes: list[int],
                     max_distance: int = NEAR_DUPLICATE_DISTANCE) -> np.ndarray:
    """Group ids ``int32 (N,)`` in ``0..G-1``: images i and j share an id when linked by a chain of
    byte-identical files or perceptual hashes at most ``max_distance`` bits apart.

    Ids are numbered in order of each group's first member. ``max_distance=-1`` groups only
    byte-identical files. Cost is O(N^2) bit comparisons, done in row blocks (fine for 10^4 images).
    """
    n = len(byte_hashes)
    if len(phashes) != n:
        raise ValueError(f"duplicate_groups got {n} byte hashes but {len(phashes)} perceptual hashes; "
                         "pass one of each per image.")
    sets = _UnionFind(n)
    first_with_hash: dict[str, int] = {}
    for i, digest in enumerate(byte_hashes):
        sets.union(i, first_with_hash.setdefault(digest, i))

    if max_distance >= 0 and n > 1:
        hashes = np.array([int(h) for h in phashes], dtype=np.uint64)
        block = 1024
        for start in range(0, n, block):
            rows = hashes[start:start + block, None] ^ hashes[None, :]
            close_i, close_j = np.nonzero(np.bitwise_count(rows) <= max_distance)
            for i, j in zip(close_i + start, close_j):
                if i < j:
                    sets.union(int(i), int(j))

    roots = [sets.find(i) for i in range(n)]
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(r, len(ids)) for r in roots], dtype=np.int32)


def count_groups(groups: np.ndarray) -> tuple[int, int, int]:
    """``(number of groups, number of groups with more than one image, images in those groups)``."""
    sizes = np.bincount(np.asarray(groups)) if len(groups) else np.zeros(0, np.int64)
    multi = sizes[sizes > 1]
    return int(len(sizes)), int(len(multi)), int(multi.sum())
