"""The decoded cache: every item of a source decoded and resized once into a uint8 memory-mapped file.

One folder per source fingerprint, resize mode, image size and decoder key (DECODER_VERSION and
max_pixels), so a change to any of them builds a new cache instead of reusing a stale one.
Training, sample grids and evaluation all decode through `DecodedCache.decode`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine.data.images import (
    DECODER_VERSION,
    DEFAULT_MAX_PIXELS,
    ImageError,
    resize_array,
    resize_image,
)
from engine.data.sources import RawSource
from engine.jsonio import read_json, write_json

Progress = Callable[[int, int], None]  # (done, total)


def default_cache_root() -> Path:
    """Where decoded images and unzipped archives are kept between runs."""
    configured = os.environ.get("STUDIO_CACHE_DIR")
    return (
        Path(configured) if configured else Path.home() / ".cache" / "image-classification-studio"
    )


def decoder_key(max_pixels: int) -> str:
    """A short name for what decides the decoded pixels besides the data, size and resize mode."""
    return hashlib.sha1(f"{DECODER_VERSION}|{max_pixels}".encode()).hexdigest()[:8]


def cache_folder_name(fingerprint: str, resize: str, image_size: int, max_pixels: int) -> str:
    return f"{fingerprint[:20]}-{resize}-{image_size}-{decoder_key(max_pixels)}"


class DecodedCache:
    """Decoded images of one source in one folder: images.u8 (N x S x S x 3 uint8) and meta.json."""

    def __init__(
        self,
        source: RawSource,
        directory: Path,
        image_size: int,
        resize: str = "squash",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.source = source
        self.directory = Path(directory)
        self.image_size = image_size
        self.resize = resize
        self.max_pixels = max_pixels
        self.valid: np.ndarray | None = None  # bool per item: decoded fine; set by open()
        self.skipped: list[dict] = []  # {file, reason} of items that did not decode

    @property
    def path(self) -> Path:
        return self.directory / "images.u8"

    def is_built(self) -> bool:
        return (self.directory / "meta.json").is_file()

    def decode(self, index: int, size: int | None = None) -> np.ndarray:
        """One item as a size x size x 3 uint8 array; ImageError when it cannot be used."""
        size = size or self.image_size
        image = self.source.read(int(index), self.max_pixels, draft_size=size)
        if isinstance(image, np.ndarray):
            return resize_array(image, size, self.resize)
        return resize_image(image, size, self.resize)

    def open(self, progress: Progress | None = None, workers: int | None = None) -> None:
        """Read which items decoded, building the cache first when it is missing or incomplete."""
        meta = read_json(self.directory / "meta.json")
        stale = meta is None or meta.get("count") != len(self.source.items)
        if stale or not self.path.is_file():
            self.build(progress, workers)
            meta = read_json(self.directory / "meta.json")
        self.valid = np.array(meta["valid"], dtype=bool)
        self.skipped = meta["skipped"]

    def images(self) -> np.ndarray:
        """All items, memory-mapped read-only; open() first."""
        return np.load(self.path, mmap_mode="r")

    def build(self, progress: Progress | None = None, workers: int | None = None) -> None:
        """Decode every item into a temporary file and move it into place when complete."""
        count, size = len(self.source.items), self.image_size
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            dir=self.directory, prefix=".images.", suffix=".tmp"
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
                    images[index] = self.decode(index)
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
            os.replace(temporary, self.path)
            write_json(
                self.directory / "meta.json",
                {
                    "count": count,
                    "image_size": size,
                    "resize": self.resize,
                    "max_pixels": self.max_pixels,
                    "decoder_version": DECODER_VERSION,
                    "spec": self.source.spec,
                    "valid": valid.tolist(),
                    "skipped": sorted(skipped, key=lambda s: s["file"]),
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
