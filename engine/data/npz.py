""".npz arrays as a source: X_train/y_train, optionally X_test/y_test and X_val/y_val, and class_names.

Nothing is unpickled, and every array's .npy header is read before its data: a file that declares
more than it holds (a shape of terabytes in a few kilobytes) or more than MAX_NPZ_BYTES is refused
before any memory is taken. Classes are the labels present, so a stray label of 2**30 makes one
class, not a billion.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.sources import RawSource, check_training_classes, human_size, source_hash
from engine.errors import UserError

MAX_NPZ_BYTES = 4 * 1024**3  # all used arrays together, as declared by their headers
MAX_CLASSES = 100_000
MAX_LABEL = 2**31 - 1
NPY_MAGIC = b"\x93NUMPY"
ORIGINS = {"train": "train", "test": "test", "val": "validation"}
CONVERT_BYTES = 64 * 1024**2  # images are made uint8 in pieces of about this many input bytes


@dataclass
class _Member:
    """One array in the archive, known from its header only."""

    key: str  # as stored, e.g. X_train
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def load_npz_source(path: str, max_bytes: int = MAX_NPZ_BYTES) -> RawSource:
    """A .npz with X_train/y_train (and optionally X_test/y_test), loaded without pickle."""
    file = Path(path)
    name = file.name
    if not file.is_file():
        raise UserError(f"The file {path} does not exist; check the path.")
    try:
        with open(file, "rb") as handle:
            start = handle.read(len(NPY_MAGIC))
    except OSError as error:
        raise UserError(
            f"{name} cannot be read ({error.strerror}); check its permissions."
        ) from None
    if not start:
        raise UserError(f"{name} is empty (0 bytes); save the arrays again with numpy.savez.")
    if start == NPY_MAGIC:
        raise UserError(
            f"{name} is a single .npy array, not an .npz archive; save the images and labels together with numpy.savez(path, X_train=images, y_train=labels)."
        )
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise UserError(
            f"{name} is not a readable .npz file ({error}); save it with numpy.savez."
        ) from None
    with archive:
        members = _members(archive, name)
        pairs = {}
        for origin, split in ORIGINS.items():
            images, labels = members.get(f"x_{origin}"), members.get(f"y_{origin}")
            if images is None and labels is None:
                continue
            if images is None or labels is None:
                raise UserError(f"{name} has only one of X_{origin} and y_{origin}; it needs both.")
            _check_shapes(images, labels, name)
            pairs[split] = (images, labels)
        if "train" not in pairs:
            found = sorted(member.key for member in members.values())
            raise UserError(f"{name} has no X_train/y_train arrays; found {found}.")
        names_member = members.get("class_names")
        used = [member for pair in pairs.values() for member in pair]
        if names_member:
            used.append(names_member)
        total = sum(member.nbytes for member in used)
        if total > max_bytes:
            raise UserError(
                f"{name} holds {human_size(total)} of arrays, over the limit of {human_size(max_bytes)}; save fewer or smaller images, as uint8."
            )
        arrays, label_arrays = {}, {}
        for split, (images, labels) in pairs.items():
            arrays[split] = _to_uint8(_read(archive, images, name))
            label_arrays[split] = _to_class_numbers(_read(archive, labels, name), name, labels.key)
        stored_names = _stored_names(archive, names_member, name) if names_member else None
    class_names, label_arrays = _classes(label_arrays, stored_names, name)
    items, labels, origins, headers = [], [], [], []
    for origin, images in arrays.items():
        height, width = images.shape[1:3]
        mode = "L" if images.ndim == 3 or images.shape[-1] == 1 else "RGB"
        items += [(origin, row) for row in range(len(images))]
        labels.append(label_arrays[origin])
        origins += [origin] * len(images)
        headers += [(width, height, mode)] * len(images)
    labels_array, origins_array = np.concatenate(labels).astype(np.int64), np.array(origins)
    check_training_classes(
        class_names,
        labels_array,
        origins_array,
        name,
        "add images of it to X_train, or remove it from the other arrays",
    )
    stat = file.stat()
    return RawSource(
        kind="npz",
        spec=str(path),
        class_names=class_names,
        items=items,
        labels=labels_array,
        origins=origins_array,
        fingerprint=source_hash("npz", file.resolve(), stat.st_size, stat.st_mtime_ns),
        headers=headers,
        arrays=arrays,
    )


def _members(archive: zipfile.ZipFile, name: str) -> dict[str, _Member]:
    """The arrays this source reads, by lower-case key, from their headers alone."""
    wanted = {f"{axis}_{origin}" for axis in "xy" for origin in ORIGINS} | {"class_names"}
    infos = [i for i in archive.infolist() if i.filename.endswith(".npy") and not i.is_dir()]
    if not infos:
        raise UserError(f"{name} holds no arrays; save X_train and y_train in it with numpy.savez.")
    members: dict[str, _Member] = {}
    seen: dict[str, str] = {}
    for info in infos:
        key = info.filename[: -len(".npy")]
        lower = key.lower()
        if lower in seen:
            raise UserError(f"{name} holds both {seen[lower]} and {key}; keep only one of them.")
        seen[lower] = key
        if lower in wanted:
            members[lower] = _header(archive, info, key, name)
    return members


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, name: str) -> _Member:
    if info.flag_bits & 0x1:
        raise UserError(f"{name} is password-protected; save the arrays again with numpy.savez.")
    try:
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
            offset = handle.tell()
    except Exception as error:  # a hostile header can fail to parse in many ways; all end here
        raise UserError(
            f"{name}: {key} is not a readable array ({error}); save it again with numpy.savez."
        ) from None
    if dtype.hasobject:
        plain = (
            "plain strings, such as numpy.array(['cat', 'dog'])"
            if key.lower() == "class_names"
            else "plain numeric arrays"
        )
        raise UserError(
            f"{name} stores {key} as pickled Python objects, which are not loaded for safety; save {plain}."
        )
    member = _Member(key, info, tuple(int(side) for side in shape), dtype)
    held = info.file_size - offset
    if member.nbytes > held:
        raise UserError(
            f"{name}: {key} declares {member.shape} {dtype} values ({human_size(member.nbytes)}) but holds {human_size(held)}; the file is damaged, save it again with numpy.savez."
        )
    return member


def _check_shapes(images: _Member, labels: _Member, name: str) -> None:
    """Refuse arrays that cannot be images and their labels, from the headers alone."""
    shape = images.shape
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3, 4)):
        raise UserError(
            f"{name}: {images.key} has shape {shape}; expected N x H x W or N x H x W x C with C 1, 3 or 4."
        )
    if images.dtype.kind not in "biuf":
        raise UserError(
            f"{name}: {images.key} holds {images.dtype} values; images must be numbers, uint8 0..255 or floats in 0..1 or 0..255."
        )
    if shape[0] == 0 or shape[1] == 0 or shape[2] == 0:
        raise UserError(
            f"{name}: {images.key} has shape {shape}, which holds no pixels; save at least one image per class."
        )
    if (
        labels.dtype.kind not in "biuf"
        or len(labels.shape) not in (1, 2)
        or (len(labels.shape) == 2 and labels.shape[1] == 0)
    ):
        raise UserError(
            f"{name}: {labels.key} must hold class numbers 0..K-1 or one-hot rows, one per image; it has shape {labels.shape} of {labels.dtype}."
        )
    if shape[0] != labels.shape[0]:
        raise UserError(
            f"{name}: {images.key} has {shape[0]} images but {labels.key} has {labels.shape[0]} labels; they must match."
        )


def _read(archive: zipfile.ZipFile, member: _Member, name: str) -> np.ndarray:
    try:
        with archive.open(member.info) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise UserError(
            f"{name}: {member.key} is damaged ({error}); save it again with numpy.savez."
        ) from None


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """Scale a whole array alike: floats in [0, 1] or [0, 255] and other ints become uint8.

    The conversion runs in pieces, so a float64 array never needs a float copy of itself.
    """
    if images.dtype == np.uint8:
        return images
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * np.uint8(255)
    scale = 255.0 if images.size and float(images.max()) <= 1.0 else 1.0
    result = np.empty(images.shape, dtype=np.uint8)
    step = max(1, CONVERT_BYTES // max(1, images[0].nbytes))
    for start in range(0, len(images), step):
        values = images[start : start + step].astype(np.float32)
        with np.errstate(invalid="ignore"):
            result[start : start + step] = np.clip(np.nan_to_num(values) * scale + 0.5, 0, 255)
    return result


def _to_class_numbers(labels: np.ndarray, name: str, key: str) -> np.ndarray:
    """Class numbers from numbers or one-hot rows; anything else is refused with a sentence."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        return labels.argmax(axis=1).astype(np.int64)
    labels = labels.reshape(-1)
    if labels.dtype.kind == "b":
        return labels.astype(np.int64)
    with np.errstate(invalid="ignore"):
        valid = (
            np.isfinite(labels)
            & (labels >= 0)
            & (labels <= MAX_LABEL)
            & (labels == np.round(labels))
            if labels.dtype.kind == "f"
            else (labels >= 0) & (labels <= MAX_LABEL)
        )
    if not valid.all():
        bad = labels[~valid][0].item()
        raise UserError(
            f"{name}: {key} holds {bad!r}, which is not a class number; labels must be whole numbers from 0 to {MAX_LABEL:,}, or one-hot rows."
        )
    return labels.astype(np.int64)


def _stored_names(archive: zipfile.ZipFile, member: _Member, name: str) -> list[str]:
    if len(member.shape) != 1 or member.dtype.kind not in "USiu" or member.shape[0] > MAX_CLASSES:
        raise UserError(
            f"{name}: class_names has shape {member.shape} of {member.dtype}; save one name per class as a list of strings, such as numpy.array(['cat', 'dog'])."
        )
    values = _read(archive, member, name)
    names = [
        value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        for value in values.tolist()
    ]
    duplicates = (
        sorted({n for n in names if names.count(n) > 1}) if len(set(names)) < len(names) else []
    )
    if duplicates:
        raise UserError(
            f"{name}: class_names lists {', '.join(map(repr, duplicates[:5]))} more than once; give each class its own name."
        )
    return names


def _classes(
    label_arrays: dict[str, np.ndarray], stored: list[str] | None, name: str
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Class names and labels as 0..K-1: the stored names, else one class per label present."""
    present = np.unique(np.concatenate(list(label_arrays.values())))
    if stored is not None:
        if int(present[-1]) >= len(stored):
            raise UserError(
                f"{name}: class_names has {len(stored)} name{'s' * (len(stored) != 1)} but a label is {int(present[-1])}; give one name per class number 0..K-1."
            )
        return stored, label_arrays
    if len(present) > MAX_CLASSES:
        raise UserError(
            f"{name} has {len(present):,} different labels, over the limit of {MAX_CLASSES:,} classes; check that the y arrays hold class numbers."
        )
    # Labels 0..K-1 keep their numbers; gaps (labels 1..10, or 3 and 7) close up under their names.
    names = [str(int(label)) for label in present]
    return names, {
        origin: np.searchsorted(present, labels) for origin, labels in label_arrays.items()
    }
