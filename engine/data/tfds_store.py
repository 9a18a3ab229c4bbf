"""The tfds blob store: a dataset's encoded images copied once into one file, decoded by index.

`cache_root/tfds/<key>/` holds images.bin (the encoded images one after another), offsets.npy,
labels.npy, headers.npy and meta.json. A store is written in a staging folder and renamed into place
complete, so a store that opens is whole; a damaged one opens as None and is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.data.cache import Progress
from engine.data.images import ImageError, open_image, read_header
from engine.data.sources import RawSource
from engine.staging import staging_folder

STORE_FORMAT = 1


@dataclass
class TfdsSource(RawSource):
    """A RawSource whose items are numbers into a blob of encoded images on disk."""

    blob_path: str = ""
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    split_names: list[tuple[str, int, int]] = field(
        default_factory=list
    )  # (spec, first, end) in the blob
    _blob: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, index: int, max_pixels: int, draft_size: int = 0) -> Image.Image:
        """Decode one item to an RGB PIL image; ImageError when its bytes are not a usable image."""
        entry = self.items[index]
        data = bytes(self._blob_array()[self.offsets[entry] : self.offsets[entry + 1]])
        return open_image(data, max_pixels, draft_size=draft_size)

    def name(self, index: int) -> str:
        return _entry_name(self.split_names, self.items[index])

    def _blob_array(self) -> np.ndarray:
        with self._lock:
            if self._blob is None:
                # A memory map lets the decoding threads read without holding the whole blob in memory.
                size = os.path.getsize(self.blob_path)
                self._blob = (
                    np.memmap(self.blob_path, dtype=np.uint8, mode="r")
                    if size
                    else np.zeros(0, np.uint8)
                )
            return self._blob


def build_store(
    store: Path,
    readers: list[tuple[str, str, Iterable[dict], int]],
    image_key: str,
    label_key: str,
    about: dict,
    progress: Progress | None,
) -> None:
    """Copy each split's encoded images into a staging folder, then rename it into place.

    readers: (origin, split spec, examples as numpy dicts, expected count) per split; about: the
    dataset's name, builder name, version and class names, kept in meta.json.
    """
    total = sum(count for *_, count in readers)
    staging = staging_folder(store)
    try:
        offsets, labels, headers, split_meta, modes = [0], [], [], [], ["L", "RGB"]
        done = 0
        with open(staging / "images.bin", "wb") as blob:
            for origin, spec, examples, _ in readers:
                first = len(labels)
                for example in examples:
                    data = encoded(example[image_key])
                    blob.write(data)
                    offsets.append(offsets[-1] + len(data))
                    labels.append(int(example[label_key]))
                    headers.append(_header(data, modes))
                    done += 1
                    if progress and done % 64 == 0:
                        progress(done, max(total, done))
                split_meta.append(
                    {"origin": origin, "spec": spec, "first": first, "end": len(labels)}
                )
        if progress:
            progress(done, done)
        np.save(staging / "offsets.npy", np.array(offsets, dtype=np.int64))
        np.save(staging / "labels.npy", np.array(labels, dtype=np.int64))
        np.save(staging / "headers.npy", np.array(headers, dtype=np.int64).reshape(-1, 3))
        meta = {
            "format": STORE_FORMAT,
            **about,
            "splits": split_meta,
            "count": len(labels),
            "modes": modes,
            "bytes": offsets[-1],
            "image_key": image_key,
            "label_key": label_key,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if store.exists():
            shutil.rmtree(store)  # an unreadable store from before; open_store refused it
        try:
            os.replace(staging, store)
        except OSError:
            if not (store / "meta.json").is_file():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_store(store: Path, name: str) -> TfdsSource | None:
    """The source from a complete blob store, or None when there is none or it is damaged."""
    try:
        meta = json.loads((store / "meta.json").read_text(encoding="utf-8"))
        offsets = np.load(store / "offsets.npy", allow_pickle=False)
        labels = np.load(store / "labels.npy", allow_pickle=False)
        headers = np.load(store / "headers.npy", allow_pickle=False)
        blob_size = (store / "images.bin").stat().st_size
    except (OSError, ValueError):
        return None
    count = int(meta.get("count", -1))
    if (
        meta.get("format") != STORE_FORMAT
        or len(offsets) != count + 1
        or len(labels) != count
        or len(headers) != count
        or int(offsets[-1]) != blob_size
    ):
        return None
    modes = meta["modes"]
    valid = np.flatnonzero(headers[:, 2] >= 0)
    origins = np.empty(count, dtype=object)
    split_names = []
    for split in meta["splits"]:
        origins[split["first"] : split["end"]] = split["origin"]
        split_names.append((split["spec"], split["first"], split["end"]))
    skipped = [
        {"file": _entry_name(split_names, int(i)), "reason": "not an image Pillow can read"}
        for i in np.flatnonzero(headers[:, 2] < 0)
    ]
    fingerprint = hashlib.sha1(
        json.dumps(
            [
                meta["dataset"],
                meta["name"],
                meta["version"],
                [s["spec"] for s in meta["splits"]],
                [s["end"] - s["first"] for s in meta["splits"]],
                count,
                blob_size,
            ]
        ).encode()
    ).hexdigest()
    return TfdsSource(
        kind="tfds",
        spec=f"tfds:{name}",
        class_names=list(meta["class_names"]),
        items=valid.tolist(),
        labels=labels[valid].astype(np.int64),
        origins=origins[valid].astype(str),
        fingerprint=fingerprint,
        skipped=skipped,
        headers=[(int(w), int(h), modes[m]) for w, h, m in headers[valid]],
        root=str(store),
        blob_path=str(store / "images.bin"),
        offsets=offsets,
        split_names=split_names,
    )


def encoded(value: Any) -> bytes:
    """Encoded image bytes; an already decoded uint8 array (mock data) becomes a lossless PNG."""
    if isinstance(value, bytes):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "SO" and array.ndim == 0:
        return bytes(array.item())
    array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _header(data: bytes, modes: list[str]) -> tuple[int, int, int]:
    """Width, height and mode number from the image header; mode -1 when Pillow cannot read it."""
    try:
        width, height, mode = read_header(data)
    except ImageError:  # an unusable image, reported in the load report
        return 0, 0, -1
    if mode not in modes:
        modes.append(mode)
    return width, height, modes.index(mode)


def _entry_name(split_names: list[tuple[str, int, int]], entry: int) -> str:
    for spec, first, end in split_names:
        if first <= entry < end:
            return f"{spec} #{entry - first}"
    return f"#{entry}"
