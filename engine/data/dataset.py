"""The one Dataset type every source becomes: splits, counts, samples, item lookup and pipelines.

Decoded, resized images live in a disk cache (engine.data.cache), built once with a progress
callback; pipelines (engine.data.pipeline) and sample grids read from it, so later epochs and
later runs never decode a file again, and nothing is held whole in memory. Before the cache is
built, a preview decodes an item with the cache's own `decode`, so it shows the pixels training
will use. Splits (engine.data.splits) keep byte-identical items together, and near-identical
ones once the cache is built; a run's manifest (engine.data.manifest) pins the exact split
memberships it was trained with, and its item ids find the same items later. The user's edits
(engine.data.edits) that the config records leave files out of every split and relabel others.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from engine.config import DataConfig
from engine.data.cache import DecodedCache, Progress, cache_folder_name, default_cache_root
from engine.data.edits import apply as apply_edits
from engine.data.items import ItemAccess, ItemImage
from engine.data.manifest import content_digest, make_manifest, manifest_splits
from engine.data.pipeline import cache_pipeline
from engine.data.sources import RawSource
from engine.data.splits import (
    SPLITS,
    CopyGroups,
    group_ids,
    groups_across_splits,
    make_splits,
    stratified_split,
)
from engine.data.statistics import (
    across_splits_warning,
    auto_image_size,
    check_classes,
    header_statistics,
)
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


class Dataset(ItemAccess):
    """A loaded source with its splits; only `prepare()` and the item images decode anything.

    Its items, by number or by stored id, come from ItemAccess (engine.data.items).
    """

    def __init__(
        self,
        source: RawSource,
        config: DataConfig,
        cache_root: Path | None = None,
        copies: CopyGroups | None = None,
    ):
        self.source = source
        self.config = config
        self.cache_root = Path(cache_root) if cache_root else default_cache_root()
        self.image_size = config.image_size or auto_image_size(source)
        self.class_names = list(source.class_names)
        check_classes(source)
        # Groups of identical and near-identical items; shared by with_edits, as the source is.
        self.copies = copies or CopyGroups(source, self.cache_dir)
        self._cache: DecodedCache | None = None  # set once prepare() has opened it
        has_edits = bool(config.exclude or config.relabel)
        self.edits = apply_edits(
            config, source.labels, self.class_names, self.item_ids() if has_edits else None
        )
        self.labels = self.edits.labels
        self._split_indices: dict[str, np.ndarray] | None = None  # carved on first use
        self._pinned = False  # set by verify_manifest: a run's stored members, never carved again

    def with_edits(self, config: DataConfig) -> Dataset:
        """This dataset under other edits (config differs only in exclude and relabel), without
        indexing or hashing the source again."""
        if dataclasses.replace(config, exclude=(), relabel={}) != dataclasses.replace(
            self.config, exclude=(), relabel={}
        ):
            raise ValueError("with_edits takes a config that differs only in exclude and relabel")
        return Dataset(self.source, config, self.cache_root, self.copies)

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

    @property
    def split_indices(self) -> dict[str, np.ndarray]:
        """Item numbers of each split, less the files the user excluded.

        Carved with the source's own labels and every item, then the excluded items are taken
        out, so an edit never moves another file to another split; relabelled items keep their
        split. Until the cache is built, only byte-identical items are known to be copies: the
        splits are carved again once it is (prepare), keeping near-identical ones together too.
        """
        if self._split_indices is None:
            groups = group_ids(self.copies.groups(), len(self.source.items))
            carved = make_splits(self.source.labels, self.source.origins, self.config, groups)
            excluded = self.edits.excluded
            self._split_indices = {split: ids[~excluded[ids]] for split, ids in carved.items()}
        return self._split_indices

    @split_indices.setter
    def split_indices(self, value: dict[str, np.ndarray]) -> None:
        self._split_indices, self._pinned = value, True

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
            "duplicates_across_splits": (across := self.duplicates_across_splits()),
            "near_duplicates_checked": self.copies.hashable and self.copies.near() is not None,
            "edits": self.edits.report(),
            "warnings": [across_splits_warning(across)] if across else [],
            "cached": self.is_prepared(),
        }

    def duplicate_groups(self) -> list[list[str]]:
        """Item ids of each group of two or more byte-identical items."""
        return self._ids_of(self.copies.identical)

    def near_duplicate_groups(self) -> list[list[str]]:
        """Item ids of each group of near-identical items; none known until the cache is built,
        nor looked for in a dataset of more than MAX_HASHED_ITEMS (engine.data.splits)."""
        near = self.copies.near() if self.copies.hashable else None
        return self._ids_of((near or {}).get("groups", []))

    def perceptual_hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """(item numbers, perceptual hashes) of the items that decoded, kept beside the cache."""
        self.prepare()
        near = self.copies.near(self._cache)
        return near["rows"], near["hashes"]

    def _ids_of(self, groups: list[list[int]]) -> list[list[str]]:
        ids = self.item_ids()
        return [[ids[index] for index in members] for members in groups]

    def duplicates_across_splits(self) -> list[dict[str, list[str]]]:
        """Groups of copies that sit in more than one split, as {split: item ids} each.

        Carved splits never do this; the source's own split folders, or a stored manifest, can.
        """
        ids = self.item_ids()
        return [
            {split: [ids[index] for index in members] for split, members in group.items()}
            for group in groups_across_splits(self.copies.groups(), self.split_indices)
        ]

    def statistics(self) -> dict:
        """Original image sizes, aspect ratios and colour modes (from headers, nothing decoded)."""
        headers, excluded = self.source.headers, self.edits.excluded
        if headers and excluded.any():
            headers = [header for header, out in zip(headers, excluded, strict=True) if not out]
        return header_statistics(headers)

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
        if self.copies.hashable:
            self.copies.near(cache)  # hashed now, if it was not before
        if not self._pinned:
            self._split_indices = None  # carved again, near-identical items known now
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

    # ----- manifest ----------------------------------------------------------------------
    def manifest(self, progress: Progress | None = None) -> dict:
        """What a run trains on (engine.data.manifest.make_manifest)."""
        return make_manifest(self, progress)

    def verify_manifest(self, manifest: dict) -> None:
        """Use a run's stored split members; UserError when the data is not what it was trained on."""
        self.split_indices = manifest_splits(
            manifest,
            self.fingerprint,
            self.class_names,
            self.item_ids(),
            self.source.spec,
            self.config.exclude,
            lambda: content_digest(self),
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
