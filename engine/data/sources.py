"""Sources: digits, folders of class subfolders, zips of them and .npz arrays, as flat item lists.

A source lists its items (a file or an array row each) with a label and the split it came from;
`engine.data.dataset.Dataset` turns that into train / validation / test and a decoded cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.data.images import array_to_rgb, open_image
from engine.errors import UserError
from engine.jsonio import read_json, write_json

SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}
IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
MAX_ZIP_BYTES = 8 * 1024**3
MAX_ZIP_ENTRIES = 2_000_000
SKIPPED_FILE = ".studio-skipped.json"  # inside an extracted zip: the entries left out and why


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
        return os.path.relpath(item, self.root) if self.root else str(item)

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
        fingerprint=_hash("digits", count, images.tobytes()),
        headers=[(8, 8, "L")] * count,
        arrays={"train": images},
    )


def load_npz_source(path: str) -> RawSource:
    """A .npz with X_train/y_train (and optionally X_test/y_test), loaded without pickle."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"The file {path} does not exist; check the path.")
    try:
        archive = np.load(file, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise UserError(
            f"{file.name} is not a readable .npz file ({error}); save it with numpy.savez."
        ) from None
    with archive:
        keys = {key.lower(): key for key in archive.files}
        arrays, label_arrays = {}, {}
        for origin in ("train", "test", "val"):
            image_key, label_key = keys.get(f"x_{origin}"), keys.get(f"y_{origin}")
            if image_key is None and label_key is None:
                continue
            if image_key is None or label_key is None:
                raise UserError(
                    f"{file.name} has only one of X_{origin} and y_{origin}; it needs both."
                )
            try:
                images, labels = archive[image_key], archive[label_key]
            except ValueError:
                raise UserError(
                    f"{file.name} stores {image_key} or {label_key} as pickled Python objects, which are not loaded for safety; save plain numeric arrays."
                ) from None
            if images.dtype == object or labels.dtype == object:
                raise UserError(
                    f"{file.name} stores object arrays, which are not loaded for safety; save plain numeric arrays."
                )
            if len(images) != len(labels):
                raise UserError(
                    f"{file.name}: {image_key} has {len(images)} images but {label_key} has {len(labels)} labels; they must match."
                )
            if images.ndim not in (3, 4) or (
                images.ndim == 4 and images.shape[-1] not in (1, 3, 4)
            ):
                raise UserError(
                    f"{file.name}: {image_key} has shape {images.shape}; expected N x H x W or N x H x W x C with C 1, 3 or 4."
                )
            arrays["validation" if origin == "val" else origin] = _to_uint8(images)
            label_arrays["validation" if origin == "val" else origin] = _to_class_ids(
                labels, file.name, label_key
            )
        if "train" not in arrays:
            raise UserError(
                f"{file.name} has no X_train/y_train arrays; found {sorted(archive.files)}."
            )
        names_key = keys.get("class_names")
        stored_names = [str(name) for name in archive[names_key]] if names_key else None
    class_count = int(max(labels.max() for labels in label_arrays.values())) + 1
    class_names = (
        stored_names
        if stored_names and len(stored_names) >= class_count
        else [str(i) for i in range(class_count)]
    )
    items, labels, origins, headers = [], [], [], []
    for origin, images in arrays.items():
        height, width = images.shape[1:3]
        mode = "L" if images.ndim == 3 or images.shape[-1] == 1 else "RGB"
        items += [(origin, row) for row in range(len(images))]
        labels.append(label_arrays[origin])
        origins += [origin] * len(images)
        headers += [(width, height, mode)] * len(images)
    stat = file.stat()
    return RawSource(
        kind="npz",
        spec=str(path),
        class_names=class_names,
        items=items,
        labels=np.concatenate(labels).astype(np.int64),
        origins=np.array(origins),
        fingerprint=_hash("npz", file.resolve(), stat.st_size, stat.st_mtime_ns),
        headers=headers,
        arrays=arrays,
    )


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """Scale a whole array once: floats in [0, 1] or [0, 255] and other ints become uint8."""
    if images.dtype == np.uint8:
        return images
    values = images.astype(np.float32)
    scale = 255.0 if values.size and float(values.max()) <= 1.0 else 1.0
    return np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)


def _to_class_ids(labels: np.ndarray, file_name: str, key: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] > 1:
        return labels.argmax(axis=1).astype(np.int64)
    labels = labels.reshape(-1)
    if (
        not np.issubdtype(labels.dtype, np.number)
        or np.any(labels < 0)
        or np.any(labels != np.round(labels))
    ):
        raise UserError(f"{file_name}: {key} must hold class numbers 0..K-1 or one-hot rows.")
    return labels.astype(np.int64)


def load_folder_source(
    path: str, *, kind: str = "folder", spec: str = "", name_root: str = ""
) -> RawSource:
    """A folder of class subfolders, optionally inside train/val/validation/test folders."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"The folder {path} does not exist; check the path.")
    if not root.is_dir():
        raise UserError(
            f"{path} is not a folder, a .zip or a .npz file; give a folder of class subfolders."
        )
    root = _unwrap_single_folder(root)
    subfolders = _visible_dirs(root)
    split_dirs = {
        SPLIT_FOLDERS[d.name.lower()]: d for d in subfolders if d.name.lower() in SPLIT_FOLDERS
    }
    layout = split_dirs if "train" in split_dirs else {"train": root}
    class_names = sorted(
        {d.name for split_dir in layout.values() for d in _visible_dirs(split_dir)}
    )
    if not class_names:
        raise UserError(
            f"{path} has no class subfolders; put the images of each class in a folder named after it."
        )
    class_ids = {name: i for i, name in enumerate(class_names)}
    items, labels, origins, headers, sizes, skipped = [], [], [], [], [], []
    stamp = hashlib.sha1()
    for origin, split_dir in sorted(layout.items()):
        for class_dir in sorted(_visible_dirs(split_dir)):
            for file in sorted(class_dir.rglob("*")):
                if not file.is_file() or any(part in IGNORED_NAMES for part in file.parts):
                    continue
                stat = file.stat()
                stamp.update(
                    f"{file.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
                )
                header = _check_header(file)
                if isinstance(header, str):
                    skipped.append({"file": str(file.relative_to(root)), "reason": header})
                    continue
                items.append(str(file))
                labels.append(class_ids[class_dir.name])
                origins.append(origin)
                headers.append(header)
                sizes.append(stat.st_size)
    return RawSource(
        kind=kind,
        spec=spec or str(path),
        class_names=class_names,
        items=items,
        labels=np.array(labels, dtype=np.int64),
        origins=np.array(origins),
        fingerprint=stamp.hexdigest(),
        skipped=skipped,
        headers=headers,
        root=name_root or str(root),
        sizes=sizes,
    )


def _check_header(file: Path) -> tuple[int, int, str] | str:
    """The header of an image file, or the reason it is not usable."""
    if file.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(file) as image:
            return image.size[0], image.size[1], image.mode
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as error:
        return f"unreadable image header: {error}"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(
        d
        for d in folder.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name not in IGNORED_NAMES
    )


def _unwrap_single_folder(root: Path) -> Path:
    """Step into lone wrapper folders, as zips of `dataset/...` usually have.

    A folder holding nothing but one folder of folders is a wrapper, unless that one folder is a
    split folder such as train/.
    """
    while True:
        entries = [
            e for e in root.iterdir() if not e.name.startswith(".") and e.name not in IGNORED_NAMES
        ]
        if (
            len(entries) == 1
            and entries[0].is_dir()
            and entries[0].name.lower() not in SPLIT_FOLDERS
            and _visible_dirs(entries[0])
        ):
            root = entries[0]
            continue
        return root


def load_zip_source(path: str, cache_root: Path, max_bytes: int = MAX_ZIP_BYTES) -> RawSource:
    """A .zip of a class-subfolder tree, extracted safely once into the cache."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"The file {path} does not exist; check the path.")
    stat = file.stat()
    key = _hash("zip", file.resolve(), stat.st_size, stat.st_mtime_ns)[:16]
    target = cache_root / "unzipped" / key
    if not target.is_dir():
        extract_zip_safely(file, target, max_bytes)
    source = load_folder_source(str(target), kind="zip", spec=str(path))
    source.skipped = read_json(target / SKIPPED_FILE, []) + source.skipped
    source.fingerprint = _hash("zip", key, source.fingerprint)
    return source


def extract_zip_safely(file: Path, target: Path, max_bytes: int = MAX_ZIP_BYTES) -> list[dict]:
    """Extract into target; entries that would land outside it are skipped and returned."""
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(
            f"{file.name} is not a readable zip archive ({error}); re-create the zip and upload it again."
        ) from None
    skipped: list[dict] = []
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with archive:
            entries = archive.infolist()
            if len(entries) > MAX_ZIP_ENTRIES:
                raise UserError(
                    f"{file.name} has {len(entries):,} entries, over the limit of {MAX_ZIP_ENTRIES:,}."
                )
            declared = sum(entry.file_size for entry in entries)
            if declared > max_bytes:
                raise UserError(
                    f"{file.name} unpacks to {declared / 1e9:.1f} GB, over the limit of {max_bytes / 1e9:.1f} GB; split it or load the folder directly."
                )
            written = 0
            for entry in entries:
                name = PurePosixPath(entry.filename.replace("\\", "/"))
                unsafe = (
                    name.is_absolute()
                    or ".." in name.parts
                    or (entry.external_attr >> 16) & 0o170000 == 0o120000
                )
                if unsafe:
                    skipped.append(
                        {
                            "file": entry.filename,
                            "reason": "unsafe path or link outside the archive; not extracted",
                        }
                    )
                    continue
                if entry.is_dir():
                    continue
                destination = staging.joinpath(*name.parts)
                if not destination.resolve().is_relative_to(staging.resolve()):
                    skipped.append(
                        {
                            "file": entry.filename,
                            "reason": "unsafe path outside the archive; not extracted",
                        }
                    )
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(entry) as reader, open(destination, "wb") as writer:
                        while chunk := reader.read(1 << 20):
                            written += len(chunk)
                            if written > max_bytes:
                                raise UserError(
                                    f"{file.name} unpacks to more than {max_bytes / 1e9:.1f} GB; split it or load the folder directly."
                                )
                            writer.write(chunk)
                except (zipfile.BadZipFile, OSError, EOFError) as error:
                    destination.unlink(missing_ok=True)
                    skipped.append(
                        {"file": entry.filename, "reason": f"corrupt zip entry: {error}"}
                    )
        # The skipped list goes in before the rename, so an extracted folder always has it.
        write_json(staging / SKIPPED_FILE, skipped)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return skipped


def _hash(*parts: Any) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()
