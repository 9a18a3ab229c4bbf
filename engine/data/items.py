"""Items as training sees them, by item number or by a stored item id.

There is one decode-and-resize path: `DecodedCache.decode`, which builds the cache. A preview
before the cache is built decodes with it; after, it reads the cached row. Either way an item is
the image_size square training uses, scaled only for display. A run's galleries name items by
their ids (paths relative to the dataset root, or origin[row]), so files removed or added since
never put another item's picture under a caption.
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
