"""Sources as flat item lists: the RawSource every kind produces, and the digits source.

A source lists its items (a file or an array row each) with a label and the split it came from;
`engine.data.dataset.Dataset` turns that into train / validation / test and a decoded cache.
Each other kind has its own module: folders (engine.data.folders), zips (engine.data.zips) and
.npz arrays (engine.data.npz); their public names can also be imported from here.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from engine.data.images import array_to_rgb, open_image
from engine.errors import UserError

# Names the kind modules define, importable from here as they were before the split. They are
# looked up on first use: those modules import RawSource from this one.
_MOVED = {
    "load_folder_source": "engine.data.folders",
    "SPLIT_FOLDERS": "engine.data.folders",
    "IGNORED_NAMES": "engine.data.folders",
    "MAX_FILES": "engine.data.folders",
    "load_zip_source": "engine.data.zips",
    "extract_zip_safely": "engine.data.zips",
    "MAX_ZIP_BYTES": "engine.data.zips",
    "MAX_ZIP_ENTRIES": "engine.data.zips",
    "SKIPPED_FILE": "engine.data.zips",
    "load_npz_source": "engine.data.npz",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class RawSource:
    """Items of one source: what to decode, its label and the split its source gave it."""

    kind: str  # digits, folder, zip, npz, tfds
    spec: str
    class_names: list[str]
    items: list[Any]  # file paths, or row numbers into `arrays`
    labels: np.ndarray  # int64, one per item
    origins: np.ndarray  # "train", "validation" or "test", one per item
    fingerprint: str
    skipped: list[dict] = field(default_factory=list)  # {file, reason}
    headers: list[tuple[int, int, str]] | None = None  # width, height, mode from file headers
    arrays: dict[str, np.ndarray] | None = None  # in-memory sources: origin -> images
    root: str = ""  # folder the file items are relative to
    sizes: list[int] | None = None  # byte size of each file item, noted while indexing

    def read(self, index: int, max_pixels: int, draft_size: int = 0) -> Image.Image | np.ndarray:
        """Decode one item: a PIL RGB image for files, a uint8 RGB array for array rows."""
        item = self.items[index]
        if self.arrays is not None:
            origin, row = item
            return array_to_rgb(self.arrays[origin][row])
        return open_image(item, max_pixels, draft_size=draft_size)

    def name(self, index: int) -> str:
        """A human-readable name of one item, for reports and galleries."""
        item = self.items[index]
        if self.arrays is not None:
            origin, row = item
            return f"{origin}[{row}]"
        return printable(os.path.relpath(item, self.root) if self.root else str(item))

    def content_sizes(self) -> np.ndarray | None:
        """Byte size of each item's content, or None where this source cannot tell.

        Two items can only be identical when their sizes are, so only items whose size collides
        with another's need `content_digest`.
        """
        if self.arrays is not None:
            row_bytes = {
                origin: array.itemsize * int(np.prod(array.shape[1:]))
                for origin, array in self.arrays.items()
            }
            return np.array([row_bytes[origin] for origin, _ in self.items], dtype=np.int64)
        if self.sizes is not None:
            return np.asarray(self.sizes, dtype=np.int64)
        return None

    def content_digest(self, index: int) -> str:
        """A hash of an item's bytes: the file as stored, or the array row with its shape."""
        item = self.items[index]
        digest = hashlib.sha1()
        if self.arrays is not None:
            origin, row = item
            values = self.arrays[origin][row]
            digest.update(f"{values.shape}{values.dtype}".encode())
            digest.update(np.ascontiguousarray(values).tobytes())
            return digest.hexdigest()
        with open(item, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


def load_digits_source() -> RawSource:
    """scikit-learn's bundled 8x8 handwritten digits: the offline default."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    count = len(images)
    return RawSource(
        kind="digits",
        spec="digits",
        class_names=[str(name) for name in digits.target_names],
        items=[("train", row) for row in range(count)],
        labels=digits.target.astype(np.int64),
        origins=np.array(["train"] * count),
        fingerprint=source_hash("digits", count, images.tobytes()),
        headers=[(8, 8, "L")] * count,
        arrays={"train": images},
    )


def printable(name: str) -> str:
    """A file or folder name as text that can always be shown and saved.

    Names from the disk that are not valid UTF-8 (photo collections from old systems) reach Python
    with surrogate escapes, which cannot be encoded; their odd bytes become visible \\xNN escapes.
    """
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def check_training_classes(
    class_names: list[str], labels: np.ndarray, origins: np.ndarray, where: str, fix: str
) -> None:
    """Refuse a source where a class has no training item: nothing could learn it."""
    counts = np.bincount(labels[origins == "train"], minlength=len(class_names))
    missing = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
    if missing:
        listed = ", ".join(repr(name) for name in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UserError(f"Class {listed}{more} of {where} has no training images; {fix}.")


def source_hash(*parts: Any) -> str:
    """A stable hash of parts, for fingerprints and cache keys."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(
            part if isinstance(part, bytes) else str(part).encode("utf-8", "backslashreplace")
        )
        digest.update(b"\0")
    return digest.hexdigest()


def human_size(count: int) -> str:
    """A byte count for a sentence: 9.9 TB, 268.4 MB, 100 bytes."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
