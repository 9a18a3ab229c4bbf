"""A run's manifest: the members of each split by item id, so evaluation uses exactly those.

`make_manifest` writes what a run trains on; `manifest_splits` finds those members in today's data,
or refuses with a sentence when the data changed since. The data's fingerprint is a quick stamp
(file sizes and modification times); a manifest also keeps a digest of every item's bytes, so
data copied elsewhere or unpacked again, whose times are new but whose files are the same, is
still the data the run was trained on. Files the user excluded (engine.data.edits)
are in no split, so they are neither "new" nor "gone" to a manifest made with them excluded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np

from engine.data.cache import Progress
from engine.data.splits import SPLITS
from engine.errors import UserError
from engine.jsonio import atomic_write_bytes

CONTENT_FOLDER = "content"  # under the cache root: one digest per data fingerprint


def make_manifest(dataset, progress: Progress | None = None) -> dict:
    """What a run trains on: the data's fingerprint and content digest, classes, image size and
    split members by id, from an engine.data.Dataset. progress(done, total) follows the digest's
    reading of every item, the slow part the first time a dataset is seen."""
    item_ids = dataset.item_ids()
    return {
        "fingerprint": dataset.fingerprint,
        "content": content_digest(dataset, progress),
        "class_names": list(dataset.class_names),
        "image_size": int(dataset.image_size),
        "splits": {
            split: [item_ids[index] for index in dataset.split_indices[split].tolist()]
            for split in SPLITS
        },
    }


def manifest_splits(
    manifest: dict,
    fingerprint: str,
    class_names: list[str],
    item_ids: list[str],
    spec: str,
    excluded: Collection[str] = (),
    content: Callable[[], str] | None = None,
) -> dict[str, np.ndarray]:
    """Item numbers of each split a run's manifest stored; UserError when the data changed since.

    `excluded` are the ids the run's config leaves out: in the data, and rightly in no split.
    `content` gives today's content digest; it is asked only when the fingerprints differ.
    """
    if not _well_formed(manifest):
        raise UserError(
            "The data manifest of this run (data_manifest.json) is damaged; train a new run on this data."
        )
    change = manifest_change(manifest, fingerprint, class_names, item_ids, spec, excluded, content)
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
    manifest: dict,
    fingerprint: str,
    class_names: list[str],
    item_ids: list[str],
    spec: str,
    excluded: Collection[str] = (),
    content: Callable[[], str] | None = None,
) -> str:
    """How the data differs from a manifest's, in a few words; empty when it does not."""
    classes = list(manifest.get("class_names") or [])
    if classes != list(class_names):
        return f"its classes were {', '.join(classes)} and are now {', '.join(class_names)}"
    stored = {name for names in (manifest.get("splits") or {}).values() for name in names}
    current = set(item_ids).difference(excluded)
    gone, new = sorted(stored - current), sorted(current - stored)
    changes = []
    if gone:
        changes.append(f"{_images(len(gone))} gone, such as {gone[0]}")
    if new:
        changes.append(f"{_images(len(new))} new, such as {new[0]}")
    if changes:
        return " and ".join(changes)
    if manifest.get("fingerprint") != fingerprint:
        stored = manifest.get("content")
        if isinstance(stored, str) and stored and content is not None and content() == stored:
            return ""  # new times, the same bytes: copied or unpacked again
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


def content_digest(dataset, progress: Progress | None = None) -> str:
    """A digest of every item's id and bytes, kept under the dataset's cache root per data
    fingerprint so a dataset's files are read for it once; progress(done, total) per item."""
    source = dataset.source
    path = Path(dataset.cache_root) / CONTENT_FOLDER / f"{source.fingerprint}.sha1"
    try:
        kept = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        kept = ""
    if len(kept) == 40 and all(character in "0123456789abcdef" for character in kept):
        return kept
    digest = hashlib.sha1()
    item_ids = dataset.item_ids()
    for index, item_id in enumerate(item_ids):
        digest.update(item_id.encode("utf-8", "backslashreplace") + b"\0")
        try:
            digest.update(source.content_digest(index).encode("ascii"))
        except OSError:
            digest.update(b"unreadable")  # such data never matches a stored digest
        if progress:
            progress(index + 1, len(item_ids))
    value = digest.hexdigest()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, value.encode("ascii"))
    except OSError:
        pass  # a read-only cache: computed, just not kept
    return value
