"""The one Dataset type every source becomes: splits, counts, samples, item lookup and pipelines.

Decoded, resized images live in a disk cache (engine.data.cache), built once with a progress
callback; pipelines (engine.data.pipeline) and sample grids read from it, so later epochs and
later runs never decode a file again, and nothing is held whole in memory. Before the cache is
built, a preview decodes an item with the cache's own `decode`, so it shows the pixels training
will use. Splits (engine.data.splits) keep byte-identical items together, and a run's manifest
pins the exact split memberships it was trained with; its item ids find the same items later.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from engine.config import DataConfig
from engine.data.cache import DecodedCache, Progress, cache_folder_name, default_cache_root
from engine.data.images import resize_array
from engine.data.items import ItemImage, cached_images, decoded_images, images_by_id
from engine.data.pipeline import cache_pipeline
from engine.data.sources import RawSource
from engine.data.splits import (
    SPLITS,
    duplicate_groups,
    group_ids,
    groups_across_splits,
    id_positions,
    make_manifest,
    make_splits,
    manifest_splits,
    stratified_split,
)
from engine.data.statistics import auto_image_size, check_classes, header_statistics
from engine.errors import UserError

__all__ = [
    "SPLITS",
    "Dataset",
    "ItemImage",
    "Progress",
    "auto_image_size",
    "default_cache_root",
    "make_splits",
    "stratified_split",
]


class Dataset:
    """A loaded source with its splits; only `prepare()` and the item images decode anything."""

    def __init__(self, source: RawSource, config: DataConfig, cache_root: Path | None = None):
        self.source = source
        self.config = config
        self.cache_root = Path(cache_root) if cache_root else default_cache_root()
        self.image_size = config.image_size or auto_image_size(source)
        self.class_names = list(source.class_names)
        self.labels = source.labels
        check_classes(source)
        self._duplicates = duplicate_groups(source)  # item numbers of byte-identical items
        self.split_indices = make_splits(
            source.labels,
            source.origins,
            config,
            group_ids(self._duplicates, len(source.items)),
        )
        self._cache: DecodedCache | None = None  # set once prepare() has opened it
        self._item_ids: list[str] | None = None
        self._positions: dict[str, int] | None = None  # item id -> item number

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
        return header_statistics(self.source.headers)

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

    # ----- samples and items -------------------------------------------------------------
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
        self, indices: Sequence[int] | np.ndarray, size: int | None = None
    ) -> list[np.ndarray | None]:
        """Images of some items as training sees them, scaled to size x size for display.

        An item that cannot be decoded gives None (the load report names it).
        """
        return [
            None if image is None else resize_array(image, size or self.image_size)
            for image, _ in self.training_images(indices)
        ]

    def training_images(
        self, indices: Sequence[int] | np.ndarray
    ) -> Iterator[tuple[np.ndarray | None, str]]:
        """(image_size square image, "") or (None, reason) of each item: one decode path.

        The cached row once the cache is built; before, the cache's own decode, which builds it.
        """
        if self.is_prepared():
            self.prepare()
            return cached_images(self._cache, indices)
        return decoded_images(self._decoded_cache(), indices)

    def item_name(self, index: int) -> str:
        return self.source.name(int(index))

    def item_ids(self) -> list[str]:
        """The stable name of every item: its path relative to the dataset root, or origin[row]."""
        if self._item_ids is None:
            self._item_ids = [self.source.name(index) for index in range(len(self.source.items))]
        return self._item_ids

    def find_items(self, item_ids: Sequence[str]) -> list[int | None]:
        """Today's item number of each stored item id; None for an id no longer in the data."""
        if self._positions is None:
            self._positions = id_positions(self.item_ids())
        return [self._positions.get(item_id) for item_id in item_ids]

    def images_by_id(self, item_ids: Sequence[str], size: int | None = None) -> list[ItemImage]:
        """Items named by their stored ids (a run's manifest or evaluation), never by position.

        An id no longer in the data, or an item that cannot be decoded, comes with one sentence
        instead of an image, so files removed or added since never show another item's picture.
        """
        return images_by_id(self, item_ids, size)

    # ----- manifest ----------------------------------------------------------------------
    def manifest(self) -> dict:
        """What a run trains on: the data's fingerprint, classes, image size and split members."""
        return make_manifest(
            self.fingerprint, self.class_names, self.image_size, self.item_ids(), self.split_indices
        )

    def verify_manifest(self, manifest: dict) -> None:
        """Use a run's stored split members; UserError when the data is not what it was trained on."""
        self.split_indices = manifest_splits(
            manifest, self.fingerprint, self.class_names, self.item_ids(), self.source.spec
        )

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
        self.prepare()
        indices = self.indices(split)
        if not len(indices):
            raise UserError(
                f"The {split} split is empty; add images or change the split fractions."
            )
        return cache_pipeline(
            self.images(),
            self.labels,
            indices,
            self.num_classes,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            one_hot=one_hot,
            drop_remainder=drop_remainder,
            with_index=with_index,
        )
