"""The one Dataset type every source becomes: splits, counts, statistics, samples and pipelines.

Decoded, resized images live in a disk cache (engine.data.cache), built once with a progress
callback; pipelines and sample grids read from it, so later epochs and later runs never decode a
file again, and nothing is held whole in memory. Splits (engine.data.splits) keep byte-identical
items together, and a run's manifest pins the exact split memberships it was trained with.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from engine.config import DataConfig
from engine.data.cache import DecodedCache, Progress, cache_folder_name, default_cache_root
from engine.data.images import ImageError, resize_array
from engine.data.sources import RawSource
from engine.data.splits import (
    SPLITS,
    duplicate_groups,
    group_ids,
    groups_across_splits,
    make_splits,
    manifest_change,
    splits_from_ids,
    stratified_split,
)
from engine.errors import UserError

__all__ = [
    "SPLITS",
    "Dataset",
    "Progress",
    "auto_image_size",
    "default_cache_root",
    "make_splits",
    "stratified_split",
]


def auto_image_size(source: RawSource) -> int:
    """A square side for the model when the user gave none: the median side, within 32..128."""
    if not source.headers:
        return 64
    sides = [min(width, height) for width, height, _ in source.headers]
    return int(min(128, max(32, np.median(sides))))


class Dataset:
    """A loaded source with its splits; decode work happens only in `prepare()` and `sample_images()`."""

    def __init__(self, source: RawSource, config: DataConfig, cache_root: Path | None = None):
        self.source = source
        self.config = config
        self.cache_root = Path(cache_root) if cache_root else default_cache_root()
        self.image_size = config.image_size or auto_image_size(source)
        self.class_names = list(source.class_names)
        self.labels = source.labels
        self._check_classes()
        self._duplicates = duplicate_groups(source)  # item numbers of byte-identical items
        self.split_indices = make_splits(
            source.labels,
            source.origins,
            config,
            group_ids(self._duplicates, len(source.items)),
        )
        self._cache: DecodedCache | None = None  # set once prepare() has opened it
        self._item_ids: list[str] | None = None

    # ----- description -------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def fingerprint(self) -> str:
        return self.source.fingerprint

    @property
    def cache_dir(self) -> Path:
        return (
            self.cache_root
            / "images"
            / cache_folder_name(
                self.fingerprint, self.config.resize, self.image_size, self.config.max_pixels
            )
        )

    def indices(self, split: str) -> np.ndarray:
        """Item numbers of a split, without items that failed to decode once the cache exists."""
        indices = self.split_indices[split]
        if self._cache is not None:
            indices = indices[self._cache.valid[indices]]
        return indices

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split."""
        result = {}
        for split in SPLITS:
            tally = np.bincount(self.labels[self.indices(split)], minlength=self.num_classes)
            result[split] = {name: int(tally[i]) for i, name in enumerate(self.class_names)}
        return result

    def skipped(self) -> list[dict]:
        """Every file left out and why: at indexing, and at decoding once the cache is built."""
        return list(self.source.skipped) + (self._cache.skipped if self._cache else [])

    def report(self) -> dict:
        """The load report: what was found, what was left out and why."""
        counts = self.counts()
        return {
            "spec": self.source.spec,
            "kind": self.source.kind,
            "fingerprint": self.fingerprint,
            "class_names": self.class_names,
            "image_size": self.image_size,
            "images": int(sum(sum(c.values()) for c in counts.values())),
            "counts": counts,
            "skipped": self.skipped(),
            "duplicates_across_splits": self.duplicates_across_splits(),
            "cached": self.is_prepared(),
        }

    def duplicate_groups(self) -> list[list[str]]:
        """Item ids of each group of two or more byte-identical items."""
        ids = self.item_ids()
        return [[ids[index] for index in members] for members in self._duplicates]

    def duplicates_across_splits(self) -> list[dict[str, list[str]]]:
        """Groups of identical items that sit in more than one split, as {split: item ids} each.

        Carved splits never do this; the source's own split folders, or a stored manifest, can.
        """
        ids = self.item_ids()
        return [
            {split: [ids[index] for index in members] for split, members in group.items()}
            for group in groups_across_splits(self._duplicates, self.split_indices)
        ]

    def statistics(self) -> dict:
        """Original image sizes, aspect ratios and colour modes (from headers, nothing decoded)."""
        headers = self.source.headers or []
        if not headers:
            return {"images": 0}
        widths = np.array([h[0] for h in headers])
        heights = np.array([h[1] for h in headers])
        aspects = widths / np.maximum(heights, 1)
        return {
            "images": len(headers),
            "width": _summary(widths),
            "height": _summary(heights),
            "aspect_ratio": _summary(aspects),
            "modes": dict(Counter(h[2] for h in headers).most_common()),
            "distinct_sizes": len(set(zip(widths.tolist(), heights.tolist(), strict=True))),
        }

    def imbalance(self) -> float:
        """Largest over smallest class count in train (1.0 is balanced)."""
        tally = np.bincount(self.labels[self.indices("train")], minlength=self.num_classes)
        return float(tally.max() / max(tally.min(), 1))

    def summary(self) -> dict:
        """Everything `python -m engine info` prints."""
        return {**self.report(), "statistics": self.statistics(), "imbalance": self.imbalance()}

    # ----- decoded cache -----------------------------------------------------------------
    def _decoded_cache(self) -> DecodedCache:
        return DecodedCache(
            self.source, self.cache_dir, self.image_size, self.config.resize, self.config.max_pixels
        )

    def is_prepared(self) -> bool:
        return self._cache is not None or self._decoded_cache().is_built()

    def prepare(self, progress: Progress | None = None, workers: int | None = None) -> None:
        """Decode and resize every item into the disk cache, once; later calls only open it."""
        if self._cache is not None:
            return
        cache = self._decoded_cache()
        cache.open(progress, workers)
        self._cache = cache
        for split in SPLITS:
            if len(self.split_indices[split]) and not len(self.indices(split)):
                raise UserError(
                    f"No image of the {split} split could be decoded; see the load report."
                )
        if progress:
            progress(len(self.source.items), len(self.source.items))

    def images(self) -> np.ndarray:
        """The memory-mapped cache of all items (N x S x S x 3 uint8), read-only; prepare() first."""
        self.prepare()
        return self._cache.images()

    # ----- samples -----------------------------------------------------------------------
    def sample_indices(
        self, split: str, count: int, seed: int = 0, class_id: int | None = None
    ) -> np.ndarray:
        """A reproducible random choice of item numbers from a split, optionally of one class."""
        indices = self.indices(split)
        if class_id is not None:
            indices = indices[self.labels[indices] == class_id]
        rng = np.random.default_rng(seed)
        return rng.permutation(indices)[:count]

    def sample_images(
        self, indices: np.ndarray, size: int | None = None
    ) -> list[np.ndarray | None]:
        """Images of some items as uint8 arrays: from the cache when built, else decoded now.

        An item that cannot be decoded gives None (the load report names it).
        """
        size = size or self.image_size
        if self.is_prepared():
            cache = self.images()
            return [
                resize_array(np.array(cache[i]), size) if self._cache.valid[i] else None
                for i in indices
            ]
        decoder, result = self._decoded_cache(), []
        for index in indices:
            try:
                result.append(decoder.decode(int(index), size))
            except ImageError:
                result.append(None)
        return result

    def item_name(self, index: int) -> str:
        return self.source.name(int(index))

    def item_ids(self) -> list[str]:
        """The stable name of every item: its path relative to the dataset root, or origin[row]."""
        if self._item_ids is None:
            self._item_ids = [self.source.name(index) for index in range(len(self.source.items))]
        return self._item_ids

    # ----- manifest ----------------------------------------------------------------------
    def manifest(self) -> dict:
        """What a run trains on: the data's fingerprint, classes, image size and split members."""
        ids = self.item_ids()
        return {
            "fingerprint": self.fingerprint,
            "class_names": list(self.class_names),
            "image_size": int(self.image_size),
            "splits": {
                split: [ids[index] for index in self.split_indices[split].tolist()]
                for split in SPLITS
            },
        }

    def verify_manifest(self, manifest: dict) -> None:
        """Use a run's stored split members; UserError when the data is not what it was trained on."""
        ids = self.item_ids()
        change = manifest_change(
            manifest, self.fingerprint, self.class_names, ids, self.source.spec
        )
        if change:
            raise UserError(
                f"The data of this run changed since it was trained ({change}); evaluate it on the data it was trained on, or train a new run."
            )
        self.split_indices = splits_from_ids(manifest["splits"], ids)

    # ----- pipelines ---------------------------------------------------------------------
    def pipeline(
        self,
        split: str,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        one_hot: bool = False,
        drop_remainder: bool = False,
        with_index: bool = False,
    ):
        """A tf.data pipeline of (float32 images in [0, 255], labels) batches read from the cache."""
        import tensorflow as tf

        self.prepare()
        indices = self.indices(split)
        if not len(indices):
            raise UserError(
                f"The {split} split is empty; add images or change the split fractions."
            )
        images, labels, num_classes = self.images(), self.labels, self.num_classes
        size = self.image_size

        def gather(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # Order within a batch does not matter to training, so read the cache file in order
            # (one fancy-index copy) and hand back the item numbers in that order too.
            batch = np.sort(batch)
            return images[batch], labels[batch], batch

        def load(batch):
            rows, batch_labels, batch = tf.numpy_function(
                gather, [batch], (tf.uint8, tf.int64, tf.int64), stateful=False
            )
            rows = tf.ensure_shape(tf.cast(rows, tf.float32), (None, size, size, 3))
            batch_labels = tf.ensure_shape(batch_labels, (None,))
            target = tf.one_hot(batch_labels, num_classes) if one_hot else batch_labels
            return (rows, target, batch) if with_index else (rows, target)

        dataset = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
        if shuffle:
            dataset = dataset.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def _check_classes(self) -> None:
        if len(self.class_names) < 2:
            raise UserError(
                f"{self.source.spec} has {len(self.class_names)} class; a classifier needs at least 2 class folders or labels."
            )
        tally = (
            np.bincount(self.labels, minlength=len(self.class_names))
            if len(self.labels)
            else np.zeros(len(self.class_names), int)
        )
        empty = [name for name, n in zip(self.class_names, tally, strict=True) if n == 0]
        if empty:
            raise UserError(
                f"Class {', '.join(map(repr, empty))} of {self.source.spec} has no usable image; add images to it or remove it."
            )


def _summary(values: np.ndarray) -> dict:
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }
