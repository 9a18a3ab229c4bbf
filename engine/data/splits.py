"""Train / validation / test membership: identical items kept together, and a run's stored members.

A photo and its exact copy in train and test would let a model score on what it memorised, so
splits carved out of train move whole groups of identical items, never single copies. A run's
manifest names the members of each split by item id, so evaluation uses exactly those.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from engine.config import DataConfig
from engine.data.sources import RawSource
from engine.errors import UserError

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


def make_manifest(
    fingerprint: str,
    class_names: list[str],
    image_size: int,
    item_ids: list[str],
    split_indices: dict[str, np.ndarray],
) -> dict:
    """What a run trains on: the data's fingerprint, classes, image size and split members by id."""
    return {
        "fingerprint": fingerprint,
        "class_names": list(class_names),
        "image_size": int(image_size),
        "splits": {
            split: [item_ids[index] for index in split_indices[split].tolist()] for split in SPLITS
        },
    }


def manifest_splits(
    manifest: dict, fingerprint: str, class_names: list[str], item_ids: list[str], spec: str
) -> dict[str, np.ndarray]:
    """Item numbers of each split a run's manifest stored; UserError when the data changed since."""
    if not _well_formed(manifest):
        raise UserError(
            "The data manifest of this run (data_manifest.json) is damaged; train a new run on this data."
        )
    change = manifest_change(manifest, fingerprint, class_names, item_ids, spec)
    if change:
        raise UserError(
            f"The data of this run changed since it was trained ({change}); evaluate it on the data it was trained on, or train a new run."
        )
    return splits_from_ids(manifest["splits"], item_ids)


def _well_formed(manifest: dict) -> bool:
    """Whether a manifest read from disk has the shape make_manifest writes (older ones included)."""
    splits, classes = manifest.get("splits"), manifest.get("class_names")
    return (
        isinstance(splits, dict)
        and all(
            isinstance(names, list) and all(isinstance(name, str) for name in names)
            for names in splits.values()
        )
        and isinstance(classes, list)
        and all(isinstance(name, str) for name in classes)
    )


def manifest_change(
    manifest: dict, fingerprint: str, class_names: list[str], item_ids: list[str], spec: str
) -> str:
    """How the data differs from a manifest's, in a few words; empty when it does not."""
    classes = list(manifest.get("class_names") or [])
    if classes != list(class_names):
        return f"its classes were {', '.join(classes)} and are now {', '.join(class_names)}"
    stored = {name for names in (manifest.get("splits") or {}).values() for name in names}
    current = set(item_ids)
    gone, new = sorted(stored - current), sorted(current - stored)
    changes = []
    if gone:
        changes.append(f"{_images(len(gone))} gone, such as {gone[0]}")
    if new:
        changes.append(f"{_images(len(new))} new, such as {new[0]}")
    if changes:
        return " and ".join(changes)
    if manifest.get("fingerprint") != fingerprint:
        return f"files of {spec} were edited or replaced"
    return ""


def id_positions(item_ids: list[str]) -> dict[str, int]:
    """Item number of each item id."""
    return {name: index for index, name in enumerate(item_ids)}


def splits_from_ids(splits: dict[str, list[str]], item_ids: list[str]) -> dict[str, np.ndarray]:
    """Item numbers of each split from the item ids a manifest stored."""
    position = id_positions(item_ids)
    return {
        split: np.sort(np.array([position[name] for name in splits.get(split, [])], dtype=np.int64))
        for split in SPLITS
    }


def _images(count: int) -> str:
    return "1 image is" if count == 1 else f"{count} images are"
