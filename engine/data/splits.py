"""Train / validation / test membership: identical and near-identical items kept together.

A photo and its copy in train and test would let a model score on what it memorised, so splits
carved out of train move whole groups, never single copies: byte-identical items, found while
indexing, and near-identical ones (a photo and its resized, re-encoded copy), found by perceptual
hashes of the decoded cache's images once it is built. The hashes and their groups are kept beside
the cache, so they are computed once per cache and never decode a file. A run's stored members are
in engine.data.manifest.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from engine.config import DataConfig
from engine.data.cache import DecodedCache
from engine.data.sources import RawSource
from engine.jsonio import atomic_write_bytes

SPLITS = ("train", "validation", "test")


def duplicate_groups(source: RawSource) -> list[list[int]]:
    """Groups of two or more byte-identical items, each sorted, ordered by their first item.

    Only items whose byte size collides with another item's are hashed, so a folder of distinct
    files costs no reads beyond indexing. Sources that cannot tell sizes have no groups.
    """
    sizes = source.content_sizes()
    if sizes is None or len(sizes) < 2:
        return []
    _, inverse, counts = np.unique(sizes, return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(counts[inverse] > 1)
    by_content: dict[tuple[int, str], list[int]] = defaultdict(list)
    for index in candidates.tolist():
        try:
            digest = source.content_digest(index)
        except OSError:
            continue  # unreadable now; decoding will report it
        by_content[(int(sizes[index]), digest)].append(index)
    return sorted(members for members in by_content.values() if len(members) > 1)


def group_ids(groups: list[list[int]], count: int) -> np.ndarray:
    """The group of each of `count` items: the smallest item number of its duplicate group."""
    ids = np.arange(count)
    for members in groups:
        ids[members] = min(members)
    return ids


def make_splits(
    labels: np.ndarray,
    origins: np.ndarray,
    config: DataConfig,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Train / validation / test item numbers; missing splits are carved out of train, stratified.

    Fractions are of the source's train items: with neither split given, 15% test and 15%
    validation leave 70% for training. `groups` (see `group_ids`) keeps each group of identical
    items in one carved split; splits the source itself gave are never changed.
    """
    splits = {split: np.flatnonzero(origins == split) for split in SPLITS}
    train, remaining = splits["train"], 1.0
    for split, fraction in (
        ("test", config.test_fraction),
        ("validation", config.validation_fraction),
    ):
        if len(splits[split]) or fraction <= 0:
            continue
        share = min(fraction / remaining, 0.5)
        train, splits[split] = stratified_split(train, labels, share, config.split_seed, groups)
        remaining -= fraction
    splits["train"] = train
    return {split: np.sort(indices) for split, indices in splits.items()}


def stratified_split(
    indices: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split item numbers into (kept, taken) with `fraction` of each class taken, reproducibly.

    With `groups`, whole groups are drawn, each counted under the label of its smallest item;
    without duplicates this is exactly the per-item split.
    """
    if groups is None:
        groups = np.arange(len(labels))
    pool_groups = groups[indices]
    # One representative per group, in the pool's order, so a pool without duplicates is drawn
    # exactly as item by item.
    _, first = np.unique(pool_groups, return_index=True)
    representatives = indices[np.sort(first)]
    members: dict[int, list[int]] = defaultdict(list)
    for item, group in zip(indices.tolist(), pool_groups.tolist(), strict=True):
        members[group].append(item)
    group_labels = labels[groups[representatives]]

    rng = np.random.default_rng(seed)
    kept, taken = [], []
    for class_id in np.unique(group_labels):
        drawn = rng.permutation(representatives[group_labels == class_id])
        count = int(round(len(drawn) * fraction))
        count = min(max(count, 1), len(drawn) - 1) if len(drawn) >= 2 else 0
        taken += [item for rep in drawn[:count] for item in members[int(groups[rep])]]
        kept += [item for rep in drawn[count:] for item in members[int(groups[rep])]]
    return np.array(kept, dtype=indices.dtype), np.array(taken, dtype=indices.dtype)


def groups_across_splits(
    groups: list[list[int]], split_indices: dict[str, np.ndarray]
) -> list[dict[str, list[int]]]:
    """The duplicate groups whose items sit in more than one split: {split: item numbers} each."""
    grouped = np.array([index for members in groups for index in members], dtype=np.int64)
    split_of: dict[int, str] = {}
    for split, indices in split_indices.items():
        for index in grouped[np.isin(grouped, indices)].tolist():
            split_of[index] = split
    result = []
    for members in groups:
        by_split: dict[str, list[int]] = defaultdict(list)
        for index in members:
            if index in split_of:
                by_split[split_of[index]].append(index)
        if len(by_split) > 1:
            result.append({split: by_split[split] for split in SPLITS if split in by_split})
    return result


def merge_groups(*group_lists: list[list[int]]) -> list[list[int]]:
    """One list of groups from several (identical, near-identical): groups sharing an item join."""
    parent: dict[int, int] = {}

    def root(item: int) -> int:
        while parent.setdefault(item, item) != item:
            parent[item] = parent[parent[item]]  # path halving
            item = parent[item]
        return item

    for groups in group_lists:
        for members in groups:
            first = root(members[0])
            for item in members[1:]:
                parent[root(item)] = first
    merged: dict[int, list[int]] = defaultdict(list)
    for item in sorted(parent):
        merged[root(item)].append(item)
    return sorted(members for members in merged.values() if len(members) > 1)


NEAR_DUPLICATES_FILE = "near_duplicates.npz"  # beside the decoded cache's images.u8
NEAR_DUPLICATES_VERSION = 1  # raise when this module's grouping changes
HASH_CHUNK = 1024  # cached images hashed at a time, so a large cache is never read whole
# Every pair of hashes is compared (about a second per 5,000 images, growing as the square):
# above this many items near copies are not looked for by themselves, only identical ones.
MAX_HASHED_ITEMS = 50_000
# A group of near copies larger than this share of the items (and than 20) is a chain of
# pictures that look alike to the hash, not copies of one: it is grouped again, stricter.
MAX_GROUP_SHARE = 0.02


class CopyGroups:
    """The copies among a source's items, each group to stay within one split: byte-identical
    items found while indexing, near-identical ones from the decoded cache's perceptual hashes."""

    def __init__(self, source: RawSource, directory: Path):
        self.count = len(source.items)
        self.directory = directory  # the decoded cache's folder
        self.identical = duplicate_groups(source)
        self._near: dict | None = None
        self.hashable = self.count <= MAX_HASHED_ITEMS  # whether prepare() looks for near copies

    def near(self, cache: DecodedCache | None = None) -> dict | None:
        """near_duplicates() of the cache: kept beside it, or hashed from `cache` once opened."""
        if self._near is None:
            images, valid = (cache.images(), cache.valid) if cache else (None, None)
            self._near = near_duplicates(self.directory, self.count, images, valid)
        return self._near

    def groups(self) -> list[list[int]]:
        """Every group of copies, identical or near-identical, by item number."""
        near = (self.near() or {}).get("groups", []) if self.hashable else []
        return merge_groups(self.identical, near)


def near_duplicates(
    directory: Path, count: int, images: np.ndarray | None = None, valid: np.ndarray | None = None
) -> dict | None:
    """{"rows", "hashes", "groups"} of a decoded cache: the items that decoded, their perceptual
    hashes, and the groups of two or more near-identical items, by item number.

    Read from NEAR_DUPLICATES_FILE when it fits this cache; else computed from `images` (the
    opened cache, with its `valid` flags) and kept there; None when neither is at hand, so
    indexing alone never hashes anything.
    """
    from engine.data import hashing

    distance = hashing.NEAR_DUPLICATE_DISTANCE
    path = Path(directory) / NEAR_DUPLICATES_FILE
    kept = _read_near_duplicates(path, count, _method(hashing))
    if kept is not None or images is None or valid is None:
        return kept
    rows = np.flatnonzero(valid)  # an undecoded row is zeros, like every other one
    parts = [  # at least one call, so no rows still give hashes of the right width
        hashing.perceptual_hashes(np.asarray(images[rows[start : start + HASH_CHUNK]]))
        for start in range(0, max(len(rows), 1), HASH_CHUNK)
    ]
    hashes = np.concatenate(parts)
    limit = max(20, int(MAX_GROUP_SHARE * count))
    found = bounded_groups(hashes, distance, limit) if len(rows) > 1 else []
    groups = sorted(sorted(rows[list(members)].tolist()) for members in found if len(members) > 1)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        method=_method(hashing),
        count=count,
        rows=rows,
        hashes=hashes,
        members=np.array([item for members in groups for item in members], dtype=np.int64),
        sizes=np.array([len(members) for members in groups], dtype=np.int64),
    )
    with contextlib.suppress(OSError):  # a read-only cache: hashed again next time
        atomic_write_bytes(path, buffer.getvalue())
    return {"rows": rows, "hashes": hashes, "groups": groups}


def bounded_groups(hashes: np.ndarray, distance: int, limit: int) -> list[list[int]]:
    """Groups of near copies (hashing.group_near_duplicates) of at most `limit` rows each: a
    larger one is grouped again at half the distance, down to identical hashes."""
    from engine.data.hashing import group_near_duplicates

    result = []
    for members in group_near_duplicates(hashes, distance):
        if len(members) <= limit or distance == 0:
            result.append(members)
        else:
            parts = bounded_groups(hashes[members], distance // 2, limit)
            result += [[members[index] for index in part] for part in parts]
    return sorted(result)


def _method(hashing) -> str:
    """What decides the kept hashes and groups, so a change to either computes them again."""
    settings = ("NEAR_DUPLICATE_DISTANCE", "HASH_SIZE", "HASH_WORDS", "SPACING_RATIO")
    return repr((NEAR_DUPLICATES_VERSION, [getattr(hashing, name, None) for name in settings]))


def _read_near_duplicates(path: Path, count: int, method: str) -> dict | None:
    """The kept hashes and groups, or None when missing, damaged or made for another cache."""
    try:
        with np.load(path, allow_pickle=False) as kept:
            values = {name: kept[name] for name in kept.files}
    except (OSError, ValueError, EOFError, KeyError):
        return None
    try:
        rows, members, sizes = values["rows"], values["members"], values["sizes"]
        fits = (
            str(values["method"]) == method
            and int(values["count"]) == count
            and len(values["hashes"]) == len(rows)
            and int(sizes.sum()) == len(members)
            and (not len(members) or 0 <= members.min() <= members.max() < count)
        )
    except (KeyError, TypeError, ValueError):
        return None
    if not fits:
        return None
    groups = (
        [part.tolist() for part in np.split(members, np.cumsum(sizes)[:-1])] if len(sizes) else []
    )
    return {"rows": rows, "hashes": values["hashes"], "groups": groups}
