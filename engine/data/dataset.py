"""The one Dataset type every source becomes: splits, counts, statistics, samples and pipelines.

Decoded, resized images live in a disk cache (a uint8 memory-mapped file per dataset fingerprint and
image size), built once with a progress callback; pipelines and sample grids read from it, so
later epochs and later runs never decode a file again, and nothing is held whole in memory.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.config import DataConfig
from engine.data.images import ImageError, resize_array, resize_image
from engine.data.sources import RawSource
from engine.errors import UserError
from engine.jsonio import read_json, write_json

SPLITS = ("train", "validation", "test")
Progress = Callable[[int, int], None]  # (done, total)


def default_cache_root() -> Path:
    """Where decoded images and unzipped archives are kept between runs."""
    configured = os.environ.get("STUDIO_CACHE_DIR")
    return (
        Path(configured) if configured else Path.home() / ".cache" / "image-classification-studio"
    )


def auto_image_size(source: RawSource) -> int:
    """A square side for the model when the user gave none: the median side, within 32..128."""
    if not source.headers:
        return 64
    sides = [min(width, height) for width, height, _ in source.headers]
    return int(min(128, max(32, np.median(sides))))


@dataclass
class CacheInfo:
    path: Path
    valid: np.ndarray  # bool per item: decoded fine
    skipped: list[dict]


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
        self.split_indices = make_splits(source.labels, source.origins, config)
        self._cache: CacheInfo | None = None

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
            / f"{self.fingerprint[:20]}-{self.config.resize}-{self.image_size}"
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
            "cached": self.is_prepared(),
        }

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
    def is_prepared(self) -> bool:
        return self._cache is not None or (self.cache_dir / "meta.json").is_file()

    def prepare(self, progress: Progress | None = None, workers: int | None = None) -> None:
        """Decode and resize every item into the disk cache, once; later calls only open it."""
        if self._cache is not None:
            return
        meta = read_json(self.cache_dir / "meta.json")
        stale = meta is None or meta.get("count") != len(self.source.items)
        if stale or not (self.cache_dir / "images.u8").is_file():
            self._build_cache(progress, workers)
            meta = read_json(self.cache_dir / "meta.json")
        self._cache = CacheInfo(
            self.cache_dir / "images.u8", np.array(meta["valid"], dtype=bool), meta["skipped"]
        )
        for split in SPLITS:
            if len(self.split_indices[split]) and not len(self.indices(split)):
                raise UserError(
                    f"No image of the {split} split could be decoded; see the load report."
                )
        if progress:
            progress(len(self.source.items), len(self.source.items))

    def _build_cache(self, progress: Progress | None, workers: int | None) -> None:
        count, size = len(self.source.items), self.image_size
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            dir=self.cache_dir, prefix=".images.", suffix=".tmp"
        )
        os.close(descriptor)
        try:
            images = np.lib.format.open_memmap(
                temporary, mode="w+", dtype=np.uint8, shape=(count, size, size, 3)
            )
            valid = np.ones(count, dtype=bool)
            skipped: list[dict] = []

            def decode(index: int) -> None:
                try:
                    image = self.source.read(index, self.config.max_pixels, draft_size=size)
                    if isinstance(image, np.ndarray):
                        images[index] = resize_array(image, size, self.config.resize)
                    else:
                        images[index] = resize_image(image, size, self.config.resize)
                except ImageError as error:
                    valid[index] = False
                    skipped.append({"file": self.source.name(index), "reason": str(error)})

            started, done = time.monotonic(), 0
            with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
                for _ in pool.map(decode, range(count)):
                    done += 1
                    if progress and (done % 64 == 0 or done == count):
                        progress(done, count)
            images.flush()
            os.replace(temporary, self.cache_dir / "images.u8")
            write_json(
                self.cache_dir / "meta.json",
                {
                    "count": count,
                    "image_size": size,
                    "resize": self.config.resize,
                    "spec": self.source.spec,
                    "valid": valid.tolist(),
                    "skipped": sorted(skipped, key=lambda s: s["file"]),
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def images(self) -> np.ndarray:
        """The memory-mapped cache of all items (N x S x S x 3 uint8), read-only; prepare() first."""
        self.prepare()
        return np.load(self._cache.path, mmap_mode="r")

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
        result = []
        for index in indices:
            try:
                image = self.source.read(int(index), self.config.max_pixels, draft_size=size)
                result.append(
                    resize_array(image, size)
                    if isinstance(image, np.ndarray)
                    else resize_image(image, size, self.config.resize)
                )
            except ImageError:
                result.append(None)
        return result

    def item_name(self, index: int) -> str:
        return self.source.name(int(index))

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


def make_splits(
    labels: np.ndarray, origins: np.ndarray, config: DataConfig
) -> dict[str, np.ndarray]:
    """Train / validation / test item numbers; missing splits are carved out of train, stratified.

    Fractions are of the source's train items: with neither split given, 15% test and 15%
    validation leave 70% for training.
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
        train, splits[split] = stratified_split(train, labels, share, config.split_seed)
        remaining -= fraction
    splits["train"] = train
    return {split: np.sort(indices) for split, indices in splits.items()}


def stratified_split(
    indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split item numbers into (kept, taken) with `fraction` of each class taken, reproducibly."""
    rng = np.random.default_rng(seed)
    kept, taken = [], []
    for class_id in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == class_id])
        count = int(round(len(members) * fraction))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        else:
            count = 0
        taken.append(members[:count])
        kept.append(members[count:])
    return np.concatenate(kept), np.concatenate(taken)


def _summary(values: np.ndarray) -> dict:
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }
