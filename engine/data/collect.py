"""Photos collected in the dashboard, Teachable Machine's way: named classes, photos from a camera
or from files, kept as a folder of class folders that loads like any other folder.

A collection is a folder under collections_root(), beside the uploads in the studio's data folder:
one subfolder per class, one file per photo, named after its content's hash and written
atomically. Class and collection names are checked to be safe folder names on any system, and
every photo is decoded by engine.data.images before it is kept, so what is saved loads.
Nothing here imports streamlit.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from engine.data.cache import default_cache_root
from engine.data.folders import IGNORED_NAMES, SPLIT_FOLDERS
from engine.data.images import (
    ALLOWED_FORMAT_NAMES,
    ALLOWED_FORMATS,
    ImageError,
    open_image,
)
from engine.data.sources import human_size
from engine.errors import UserError
from engine.jsonio import atomic_write_bytes

COLLECTIONS = "collections"  # the folder of collections in the studio's data folder
NAME_MAX = 40  # characters in a class or collection name
MAX_PHOTO_BYTES = 25_000_000  # a phone's largest photos are under 15 MB
# A photo's file suffix by the format Pillow found (MPO: a phone's JPEG with a second picture).
SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp"}
SUFFIXES |= {"WEBP": ".webp", "TIFF": ".tif"}
# Characters no folder name may hold on Linux, macOS or Windows, and Windows' device names.
UNSAFE_CHARACTERS = set('/\\:*?"<>|')
RESERVED_NAMES = {"con", "prn", "aux", "nul"} | {
    f"{kind}{n}" for kind in ("com", "lpt") for n in range(10)
}


def collections_root() -> Path:
    """Where collections are kept: `$STUDIO_CACHE_DIR/collections` (uploads are beside it)."""
    return default_cache_root() / COLLECTIONS


def check_name(name: object, taken: Iterable[str] = (), what: str = "class") -> str:
    """The name, stripped and NFC-normalised, when it makes a safe folder name not in taken
    (case-insensitively); else a UserError that says what to change."""
    if not isinstance(name, str):
        raise UserError(f"A {what} name must be text; type one such as 'cat'.")
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise UserError(f"A {what} name cannot be empty; type one such as 'cat'.")
    if len(name) > NAME_MAX:
        raise UserError(
            f"A {what} name can have at most {NAME_MAX} characters, not {len(name)}; shorten it."
        )
    if not name.isprintable() or UNSAFE_CHARACTERS & set(name):
        raise UserError(
            f'A {what} name becomes a folder name, so it cannot hold / \\ : * ? " < > | or '
            "control characters; type it without them."
        )
    if name.startswith(".") or name.endswith("."):
        raise UserError(f"A {what} name cannot start or end with a dot; type it without one.")
    folded = name.casefold()
    if folded in SPLIT_FOLDERS or folded in {ignored.casefold() for ignored in IGNORED_NAMES}:
        raise UserError(
            f"'{name}' names a split or system folder (train, val, test, ...); choose another "
            f"{what} name."
        )
    if folded.split(".")[0] in RESERVED_NAMES:
        raise UserError(f"'{name}' is a device name on Windows; choose another {what} name.")
    if folded in {other.casefold() for other in taken}:
        raise UserError(f"There is already a {what} named '{name}'; choose another name.")
    return name


def list_collections(root: Path | None = None) -> list[str]:
    """The collections' names, sorted."""
    root = Path(root) if root else collections_root()
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(".")
    )


def create_collection(name: str, root: Path | None = None) -> Path:
    """Make a new, empty collection; returns its folder."""
    root = Path(root) if root else collections_root()
    name = check_name(name, list_collections(root), what="collection")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def list_classes(collection: Path) -> dict[str, list[Path]]:
    """{class name: its photos, oldest first}, classes sorted by name."""
    collection = Path(collection)
    if not collection.is_dir():
        raise UserError(f"The collection {collection.name} is gone; choose or create another.")
    classes = {}
    for folder in sorted(collection.iterdir(), key=lambda entry: entry.name):
        if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith("."):
            photos = [
                photo
                for photo in folder.iterdir()
                if photo.is_file() and not photo.is_symlink() and not photo.name.startswith(".")
            ]
            classes[folder.name] = sorted(photos, key=lambda p: (p.stat().st_mtime_ns, p.name))
    return classes


def add_class(collection: Path, name: str) -> str:
    """Add an empty class to a collection; returns its name as stored."""
    name = check_name(name, list_classes(collection))
    (Path(collection) / name).mkdir()
    return name


def remove_class(collection: Path, name: str) -> None:
    """Remove a class and its photos: renamed to a hidden name first, so it leaves whole."""
    folder = _class_folder(collection, name)
    doomed = folder.parent / f".removing-{secrets.token_hex(4)}"
    try:
        os.rename(folder, doomed)
    except OSError as error:
        raise UserError(
            f"Class '{name}' could not be removed ({error.strerror}); check the permissions of "
            f"{folder.parent}."
        ) from None
    shutil.rmtree(doomed, ignore_errors=True)


def add_photo(collection: Path, class_name: str, data: bytes, file_name: str) -> bool:
    """Keep a photo in a class; False when that class has it already. A file that is not an
    image (or too large, or in another class) is refused with a sentence naming file_name."""
    folder = _class_folder(collection, class_name)
    if len(data) > MAX_PHOTO_BYTES:
        raise UserError(
            f"{file_name} was not added: it has {human_size(len(data))}, over the "
            f"{human_size(MAX_PHOTO_BYTES)} a photo can have; make it smaller."
        )
    try:
        open_image(data)  # the whole decode training does: truncated files fail here
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            suffix = SUFFIXES.get(image.format or "", ".jpg")
    except ImageError as error:
        raise UserError(
            f"{file_name} was not added ({error}); choose a {ALLOWED_FORMAT_NAMES} photo."
        ) from None
    stem = hashlib.sha256(data).hexdigest()[:20]
    for other, photos in list_classes(collection).items():
        if any(photo.stem == stem for photo in photos):
            if other == folder.name:
                return False
            raise UserError(
                f"{file_name} was not added: the same photo is in class '{other}' already, and a "
                "photo can teach one class only."
            )
    atomic_write_bytes(folder / f"{stem}{suffix}", data)
    return True


def remove_photo(collection: Path, class_name: str, photo_name: str) -> None:
    """Remove one photo of a class (nothing happens when it is gone already)."""
    folder = _class_folder(collection, class_name)
    if Path(photo_name).name != photo_name or photo_name.startswith("."):
        raise UserError(f"{photo_name} is not a photo of class '{class_name}'.")
    (folder / photo_name).unlink(missing_ok=True)


def thumbnail(path: Path, side: int = 128) -> np.ndarray | None:
    """A photo fitted into side x side pixels (RGB uint8), or None when it cannot be decoded."""
    try:
        image = open_image(path, draft_size=side)
    except ImageError:
        return None
    return np.asarray(ImageOps.contain(image, (side, side)))


def readiness_problem(collection: Path) -> str | None:
    """Why the collection cannot be loaded as a dataset yet (a sentence), or None."""
    classes = list_classes(collection)
    if len(classes) < 2:
        return "A classifier needs two classes or more; add another class and its photos."
    empty = [name for name, photos in classes.items() if not photos]
    if empty:
        return (
            f"Class '{empty[0]}' has no photos yet; add some, or remove the class, before "
            "training on this collection."
        )
    return None


def _class_folder(collection: Path, name: str) -> Path:
    """The folder of an existing class of collection, or a UserError."""
    folder = Path(collection) / str(name)
    if (
        Path(str(name)).name != name
        or str(name).startswith(".")
        or folder.is_symlink()
        or not folder.is_dir()
    ):
        raise UserError(
            f"The collection {Path(collection).name} has no class '{name}'; add it first."
        )
    return folder
