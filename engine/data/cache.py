"""The decoded cache: every item of a source decoded and resized once into a uint8 memory-mapped file.

One folder per source fingerprint, resize mode, image size and decoder key (DECODER_VERSION and
max_pixels), so a change to any of them builds a new cache instead of reusing a stale one.
Training, sample grids and evaluation all decode through `DecodedCache.decode`. The file is
allocated before it is memory-mapped, so a full disk is a sentence and not a SIGBUS, and a
damaged cache (truncated images, broken meta.json) is built again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine.data.images import (
    DECODER_VERSION,
    DEFAULT_MAX_PIXELS,
    ImageError,
    large_decode_slot,
    resize_array,
    resize_image,
)
from engine.data.sources import RawSource
from engine.errors import UserError
from engine.jsonio import write_json
from engine.staging import staging_file

Progress = Callable[[int, int], None]  # (done, total)
ZERO_CHUNK = 16 * 1024**2  # bytes written at a time where the file system cannot fallocate
META_ROOM = 64 * 1024  # meta.json besides its per-item entries
META_BYTES_PER_ITEM = 16  # one "true," line of meta.json's valid list, indented


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

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.source.items), self.image_size, self.image_size, 3

    def is_built(self) -> bool:
        return (self.directory / "meta.json").is_file() and self.path.is_file()

    def decode(self, index: int, size: int | None = None) -> np.ndarray:
        """One item as a size x size x 3 uint8 array; ImageError when it cannot be used."""
        size = size or self.image_size
        # Where the header gives the size, a large image holds its slot through the resize too.
        with large_decode_slot(self._header_pixels(int(index))):
            image = self.source.read(int(index), self.max_pixels, draft_size=size)
            if isinstance(image, np.ndarray):
                return resize_array(image, size, self.resize)
            return resize_image(image, size, self.resize)

    def _header_pixels(self, index: int) -> int:
        headers = self.source.headers
        if not headers or len(headers) != len(self.source.items):
            return 0
        width, height, _ = headers[index]
        return int(width) * int(height)

    def open(self, progress: Progress | None = None, workers: int | None = None) -> None:
        """Read which items decoded, building the cache first when it is missing or damaged."""
        meta = self._read_meta()
        if meta is None or not self._images_readable():
            meta = self.build(progress, workers)
        self.valid = np.array(meta["valid"], dtype=bool)
        self.skipped = meta["skipped"]

    def _read_meta(self) -> dict | None:
        """meta.json when it describes this cache; None when it is missing, damaged or stale."""
        try:
            meta = json.loads((self.directory / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
            return None
        if not isinstance(meta, dict):
            return None
        valid, skipped = meta.get("valid"), meta.get("skipped")
        fits = (
            meta.get("count") == len(self.source.items)
            and meta.get("image_size") == self.image_size
            and isinstance(valid, list)
            and len(valid) == len(self.source.items)
            and all(isinstance(flag, bool) for flag in valid)
            and isinstance(skipped, list)
            and all(
                isinstance(entry, dict)
                and isinstance(entry.get("file"), str)
                and isinstance(entry.get("reason"), str)
                for entry in skipped
            )
        )
        return meta if fits else None

    def _images_readable(self) -> bool:
        """Whether images.u8 holds a whole array of this cache's shape (not truncated or foreign)."""
        try:
            images = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError, EOFError):  # missing, truncated or not a .npy file
            return False
        return images.dtype == np.uint8 and images.shape == self.shape

    def images(self) -> np.ndarray:
        """All items, memory-mapped read-only; open() first."""
        return np.load(self.path, mmap_mode="r")

    def build(self, progress: Progress | None = None, workers: int | None = None) -> dict:
        """Decode every item into a temporary file and move it into place when complete; its meta."""
        count = len(self.source.items)
        self.directory.mkdir(parents=True, exist_ok=True)
        needed = count * self.image_size**2 * 3 + META_ROOM + META_BYTES_PER_ITEM * count
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise disk_full(self.directory, needed, free)
        temporary = staging_file(self.path)
        try:
            images = allocate_array(Path(temporary), self.shape)
            valid = np.ones(count, dtype=bool)
            skipped: list[dict] = []

            def decode(index: int) -> None:
                try:
                    images[index] = self.decode(index)
                except ImageError as error:
                    valid[index] = False
                    skipped.append({"file": self.source.name(index), "reason": str(error)})
                except OSError as error:  # reading the item, e.g. a file removed since indexing
                    valid[index] = False
                    reason = f"cannot be read: {error.strerror or error}"
                    skipped.append({"file": self.source.name(index), "reason": reason})

            started, done = time.monotonic(), 0
            with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
                for _ in pool.map(decode, range(count)):
                    done += 1
                    if progress and (done % 64 == 0 or done == count):
                        progress(done, count)
            images.flush()
            os.replace(temporary, self.path)
            meta = {
                "count": count,
                "image_size": self.image_size,
                "resize": self.resize,
                "max_pixels": self.max_pixels,
                "decoder_version": DECODER_VERSION,
                "spec": self.source.spec,
                "valid": valid.tolist(),
                "skipped": sorted(skipped, key=lambda s: s["file"]),
                "seconds": round(time.monotonic() - started, 3),
            }
            write_json(self.directory / "meta.json", meta)
            return meta
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.directory, needed, _free_bytes(self.directory)) from None
            raise
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def allocate_array(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A zero-filled uint8 .npy file at path with every block on disk, memory-mapped for writing.

    A memory map over a sparse file takes disk blocks on its first write to each page, and on a
    full disk that write kills the process with SIGBUS; allocating first makes it an OSError here.
    """
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    start, end = header.offset, header.offset + header.nbytes
    del header
    with open(path, "r+b") as handle:
        _allocate(handle, start, end)
    return np.lib.format.open_memmap(path, mode="r+")


def _allocate(handle, start: int, end: int) -> None:
    """Reserve bytes start..end of an open file: posix_fallocate, or writing zeros where unsupported."""
    fallocate = getattr(os, "posix_fallocate", None)  # not on macOS
    if fallocate is not None:
        try:
            fallocate(handle.fileno(), start, end - start)
            return
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    zeros = memoryview(bytes(min(ZERO_CHUNK, end - start)))
    handle.seek(start)
    while start < end:
        start += handle.write(zeros[: min(len(zeros), end - start)])
    handle.flush()
    os.fsync(handle.fileno())


def disk_full(directory: Path, needed: int, free: int) -> UserError:
    """The sentence for a decoded cache that does not fit on its disk."""
    return UserError(
        f"The disk is full at {directory}: the decoded cache needs {math.ceil(needed / 1024**2)} MB "
        f"and {free // 1024**2} MB are free; free some disk space or set STUDIO_CACHE_DIR to a "
        "folder on a larger disk."
    )


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return 0
