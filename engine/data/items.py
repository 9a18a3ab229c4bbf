"""Items as training sees them, by item number or by a stored item id.

`ItemAccess`, the Dataset's base, finds them. There is one decode-and-resize path:
`DecodedCache.decode`, which builds the cache. A preview before the cache is built decodes with
it; after, it reads the cached row. Either way an item is the image_size square training uses,
scaled only for display. A run's galleries name items by their ids (paths relative to the dataset
root, or origin[row]), so files removed or added since never put another item's picture under a
caption.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.data.cache import DecodedCache
from engine.data.images import ImageError, resize_array

if TYPE_CHECKING:
    from engine.data.dataset import Dataset


class ItemAccess:
    """A Dataset's items by number or by stored id, as training sees them (Dataset's base).

    It uses the Dataset's source, labels, indices(), image_size and decoded cache.
    """

    _item_ids: list[str] | None = None
    _positions: dict[str, int] | None = None  # item id -> item number

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
            self._positions = {name: index for index, name in enumerate(self.item_ids())}
        return [self._positions.get(item_id) for item_id in item_ids]

    def images_by_id(self, item_ids: Sequence[str], size: int | None = None) -> list[ItemImage]:
        """Items named by their stored ids (a run's manifest or evaluation), never by position.

        An id no longer in the data, or an item that cannot be decoded, comes with one sentence
        instead of an image, so files removed or added since never show another item's picture.
        """
        return images_by_id(self, item_ids, size)


@dataclass(frozen=True)
class ItemImage:
    """One item looked up by its id: its image, or None and the sentence saying why not."""

    item_id: str
    image: np.ndarray | None
    problem: str = ""  # one sentence when image is None, else empty


def cached_images(
    cache: DecodedCache, indices: Sequence[int] | np.ndarray
) -> Iterator[tuple[np.ndarray | None, str]]:
    """(image, "") or (None, reason) of each item from an opened cache."""
    rows = cache.images()
    reasons = {entry["file"]: entry["reason"] for entry in cache.skipped}
    for index in indices:
        if cache.valid[index]:
            yield np.array(rows[index]), ""
        else:
            yield None, reasons.get(cache.source.name(int(index)), "could not be decoded")


def decoded_images(
    cache: DecodedCache, indices: Sequence[int] | np.ndarray
) -> Iterator[tuple[np.ndarray | None, str]]:
    """(image, "") or (None, reason) of each item, decoded now exactly as the cache build does."""
    for index in indices:
        try:
            yield cache.decode(int(index)), ""
        except ImageError as error:
            yield None, str(error)
        except OSError as error:  # reading the item, e.g. a tfds blob removed since indexing
            yield None, f"cannot be read: {error.strerror or error}"


def images_by_id(
    dataset: Dataset, item_ids: Sequence[str], size: int | None = None
) -> list[ItemImage]:
    """Items named by their stored ids, each as a size x size image or one sentence why not."""
    item_ids = list(item_ids)
    found = dataset.find_items(item_ids)
    decoded = dataset.training_images([index for index in found if index is not None])
    size = size or dataset.image_size
    result = []
    for item_id, index in zip(item_ids, found, strict=True):
        if index is None:
            problem = (
                f"{item_id} is no longer in {dataset.source.spec}; it was removed or renamed since."
            )
            result.append(ItemImage(item_id, None, problem))
            continue
        image, reason = next(decoded)
        if image is None:
            result.append(ItemImage(item_id, None, f"{item_id} cannot be decoded: {reason}."))
        else:
            result.append(ItemImage(item_id, resize_array(image, size)))
    return result
