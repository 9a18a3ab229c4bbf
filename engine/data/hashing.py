"""Duplicate detection: perceptual hashes of decoded images, and groups of exact or near copies.

`perceptual_hashes` gives every image imagehash's DCT hash (phash) and difference hash (dhash)
on a 16 x 16 grid: 512 bits in 8 uint64 words. Two images are near copies when their hashes
differ in at most `near_duplicate_distance` bits: NEAR_DUPLICATE_DISTANCE at most, and less on
a set whose different images all lie close together, such as handwritten digits (SPACING_RATIO
of the median distance from an image to its nearest neighbour). Groups are the connected
components of "near" (union-find), so a chain of near copies is one group.

Measured on the decoded caches of ../shared/data (flowers 4,317 photos and cats-vs-dogs 2,500
at 128 px, CIFAR-10 6,000 and MNIST 4,000 at 32 px, scikit-learn's 1,797 digits): a photo is a
median 201-204 bits from its nearest neighbour, so photos get the threshold 80. A copy resized
to half or 70% and saved again as JPEG (quality 60-75) is found 200 of 200 times (at most 30
bits away), one with 2% cut off every side 198-200 of 200, 3% off one side 182-200 of 200, 5% off
every side not at all (median 135 bits); a 32 px CIFAR-10 image halved is mostly lost (11 of 200
found), its 70% copy 164 of 200. Within 80 bits, the flowers have 29 pairs, 6 of them
byte-identical and every other one the same photo recoloured or a shot of the same burst;
cats-vs-dogs 1 pair and CIFAR-10 3, each one picture twice. Digits lie closer together (median
108 bits for MNIST, 79 for scikit-learn's), so their threshold is 43 and 31: MNIST then has 4
pairs, each two all but identical strokes of a 1, where a fixed threshold of 20 of 128 bits
(8 x 8 hashes) chained 2,930 different digits into one group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import imagehash
import numpy as np
from PIL import Image

HASH_SIZE = 16  # imagehash's grid side: HASH_SIZE**2 bits per hash, two hashes per image
HASH_WORDS = 2 * HASH_SIZE**2 // 64  # uint64 columns of perceptual_hashes
NEAR_DUPLICATE_DISTANCE = 96  # the most bits (of 512) two near copies may differ in
SPACING_RATIO = 0.4  # near copies are closer than this share of the set's median NN distance
PROGRESS_EVERY = 256  # images hashed between two progress reports
PAIR_BLOCK = 2_000_000  # hash pairs compared at once

Progress = Callable[[int, int], None]  # (done, total)


def perceptual_hashes(images: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """N x HASH_WORDS uint64: the phash then the dhash of each of N uint8 RGB images (N x H x W x 3).

    Works on any array-like of images (a memory-mapped cache is read one image at a time);
    progress(done, total) is called every PROGRESS_EVERY images and at the end.
    """
    count = len(images)
    hashes = np.zeros((count, HASH_WORDS), dtype=np.uint64)
    for index in range(count):
        picture = Image.fromarray(np.asarray(images[index], dtype=np.uint8))
        bits = np.concatenate(
            [
                imagehash.phash(picture, hash_size=HASH_SIZE).hash.reshape(-1),
                imagehash.dhash(picture, hash_size=HASH_SIZE).hash.reshape(-1),
            ]
        )
        hashes[index] = np.frombuffer(np.packbits(bits).tobytes(), dtype=">u8")
        if progress and ((index + 1) % PROGRESS_EVERY == 0 or index + 1 == count):
            progress(index + 1, count)
    return hashes


def hash_distances(hashes: np.ndarray, index: int) -> np.ndarray:
    """Hamming distance (bits, summed over the hash columns) of every hash to hashes[index]."""
    hashes = _two_dimensional(hashes)
    return np.bitwise_count(hashes ^ hashes[index]).sum(axis=1, dtype=np.int64)


def close_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, nearest): every pair of rows within max_distance bits as an M x 3 array of
    (first, second, distance) with first < second, and each row's distance to its nearest other
    row. Every pair is compared, PAIR_BLOCK at a time: 5,000 images take about a second."""
    hashes = _two_dimensional(hashes)
    count = len(hashes)
    nearest = np.full(count, np.iinfo(np.int32).max, dtype=np.int64)
    rows_at_once = max(1, PAIR_BLOCK // max(count, 1))
    found = [np.zeros((0, 3), dtype=np.int64)]
    for start in range(0, count, rows_at_once):
        block = hashes[start : start + rows_at_once]
        rest = hashes[start:]
        distances = np.zeros((len(block), len(rest)), dtype=np.int32)
        for word in range(hashes.shape[1]):  # one word at a time keeps the temporaries small
            distances += np.bitwise_count(block[:, word, None] ^ rest[None, :, word])
        # Only pairs whose second row comes after the first: the upper triangle.
        below = np.arange(len(block))[:, None] >= np.arange(len(rest))[None, :]
        distances[below] = np.iinfo(np.int32).max
        nearest[start : start + len(block)] = np.minimum(
            nearest[start : start + len(block)], distances.min(axis=1)
        )
        nearest[start:] = np.minimum(nearest[start:], distances.min(axis=0))
        first, second = np.nonzero(distances <= max_distance)
        found.append(np.stack([first + start, second + start, distances[first, second]], axis=1))
    return np.concatenate(found).astype(np.int64), nearest


def near_duplicate_distance(
    nearest: np.ndarray, max_distance: int = NEAR_DUPLICATE_DISTANCE
) -> int:
    """The threshold for a set whose rows lie `nearest` bits from their nearest neighbours:
    SPACING_RATIO of the median of those, and at most max_distance."""
    if len(nearest) < 2:
        return int(max_distance)
    return int(min(max_distance, np.floor(SPACING_RATIO * np.median(nearest))))


def near_pairs(
    hashes: np.ndarray, max_distance: int = NEAR_DUPLICATE_DISTANCE
) -> list[tuple[int, int, int]]:
    """(first, second, distance) of every near pair (see near_duplicate_distance), first < second."""
    pairs, nearest = close_pairs(hashes, max_distance)
    threshold = near_duplicate_distance(nearest, max_distance)
    return [tuple(pair) for pair in pairs[pairs[:, 2] <= threshold].tolist()]


def group_near_duplicates(
    hashes: np.ndarray, max_distance: int = NEAR_DUPLICATE_DISTANCE
) -> list[list[int]]:
    """Groups (row numbers, each sorted, ordered by first row) of two or more near copies.

    hashes: perceptual_hashes' N x HASH_WORDS array (any N x K uint64: distances add up over
    the columns). Two rows are linked when their hashes are at most near_duplicate_distance
    bits apart (max_distance, or less where the set's images lie close together); a group is
    everything linked directly or through a chain.
    """
    links = UnionFind(len(_two_dimensional(hashes)))
    for first, second, _ in near_pairs(hashes, max_distance):
        links.union(first, second)
    return links.groups()


def exact_groups(digests: Sequence[str]) -> list[list[int]]:
    """Groups (positions, each sorted, ordered by first position) of two or more equal digests.

    An empty digest means "unknown" (an item that could not be read) and joins no group.
    """
    by_digest: dict[str, list[int]] = defaultdict(list)
    for position, digest in enumerate(digests):
        if digest:
            by_digest[digest].append(position)
    return sorted(members for members in by_digest.values() if len(members) > 1)


class UnionFind:
    """Disjoint sets over 0..count-1: union(a, b) joins two sets, groups() lists the larger ones."""

    def __init__(self, count: int):
        self.parent = list(range(count))

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: int, second: int) -> None:
        first, second = self.find(first), self.find(second)
        if first != second:
            self.parent[max(first, second)] = min(first, second)

    def groups(self) -> list[list[int]]:
        """Every set of two or more items, each sorted, ordered by its first item."""
        members: dict[int, list[int]] = defaultdict(list)
        for item in range(len(self.parent)):
            members[self.find(item)].append(item)
        return sorted(group for group in members.values() if len(group) > 1)


def _two_dimensional(hashes: np.ndarray) -> np.ndarray:
    hashes = np.asarray(hashes, dtype=np.uint64)
    return hashes[:, None] if hashes.ndim == 1 else hashes
