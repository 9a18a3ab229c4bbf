"""Folders as a source: root/<class>/* or root/train|val|validation|test/<class>/*.

Indexing reads file headers only. It stays inside the dataset folder: links to folders are not
followed, links to files outside the folder are not read, and both are listed in the load report
with every other file left out (not an image, outside any class folder, not a regular file).
A folder of more than MAX_FILES files is refused with a sentence. Listing the files comes first,
then reading their headers reports progress(done, total) every PROGRESS_EVERY files.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np

from engine.data.cache import Progress
from engine.data.images import ImageError, read_header
from engine.data.sources import RawSource, check_training_classes, printable
from engine.errors import UserError

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
MAX_FILES = 1_000_000  # more files than this is not a dataset one machine indexes in one go
PROGRESS_EVERY = 256  # files whose headers are read between two progress reports


class _Index:
    """What indexing has seen so far: the file count against the cap, and what was left out."""

    def __init__(self, root: Path, where: str, max_files: int):
        self.root, self.real_root = root, root.resolve()
        self.where, self.max_files = where, max_files
        self.files = 0
        self.skipped: list[dict] = []

    def leave_out(self, path: Path | str, reason: str) -> None:
        self.skipped.append({"file": printable(os.path.relpath(path, self.root)), "reason": reason})

    def count_file(self) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise UserError(
                f"{self.where} holds more than {self.max_files:,} files; load a smaller folder or split it into several datasets."
            )

    def is_inside(self, path: Path | str) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(self.real_root)

    def link_reason(self, path: Path | str, what: str) -> str:
        if self.is_inside(path):
            return f"a link to a {what}; links to folders are not followed"
        return f"a link to a {what} outside the dataset folder; not followed"

    def folders(self, folder: Path, loose_reason: str = "") -> list[Path]:
        """The visible subfolders of folder; links to folders are left out and reported.

        With loose_reason, the files directly in folder are reported as left out for that reason.
        """
        found = []
        try:
            entries = sorted(_visible(folder))
        except OSError as error:
            self.leave_out(folder, f"folder cannot be read ({error.strerror}); left out")
            return found
        for entry in entries:
            if entry.is_symlink() and entry.is_dir():
                self.leave_out(entry, self.link_reason(entry, "folder"))
            elif entry.is_dir():
                found.append(entry)
            elif loose_reason:
                self.count_file()
                self.leave_out(entry, loose_reason)
        return found

    def files_under(self, folder: Path) -> list[tuple[Path, os.stat_result]]:
        """Every regular file under folder (or a link to one inside the dataset), sorted."""
        found = []
        for top, folder_names, file_names in os.walk(folder, onerror=self._unreadable):
            here = Path(top)
            folder_names[:] = sorted(name for name in folder_names if name not in IGNORED_NAMES)
            for name in list(folder_names):
                if (here / name).is_symlink():
                    folder_names.remove(name)
                    self.leave_out(here / name, self.link_reason(here / name, "folder"))
            for name in sorted(file_names):
                if name in IGNORED_NAMES:
                    continue
                self.count_file()
                file = here / name
                if file.is_symlink() and not self.is_inside(file):
                    self.leave_out(file, "a link to a file outside the dataset folder; not read")
                    continue
                try:
                    status = file.stat()
                except OSError:
                    self.leave_out(file, "a broken link or a file that vanished; not read")
                    continue
                if not stat.S_ISREG(status.st_mode):
                    self.leave_out(file, "not a regular file (a pipe, socket or device); not read")
                    continue
                found.append((file, status))
        return found

    def _unreadable(self, error: OSError) -> None:
        self.leave_out(error.filename, f"folder cannot be read ({error.strerror}); left out")


def load_folder_source(
    path: str,
    *,
    kind: str = "folder",
    spec: str = "",
    max_files: int | None = None,
    progress: Progress | None = None,
) -> RawSource:
    """A folder of class subfolders, optionally inside train/val/validation/test folders.

    progress(done, total) follows the header reads, the slow part of indexing a large folder.
    """
    root = Path(path)
    where = spec or str(path)
    if not root.exists():
        raise UserError(f"The folder {path} does not exist; check the path.")
    if not root.is_dir():
        raise UserError(
            f"{path} is not a folder, a .zip or a .npz file; give a folder of class subfolders."
        )
    try:
        os.listdir(root)
    except OSError as error:
        raise UserError(
            f"The folder {path} cannot be read ({error.strerror}); check its permissions."
        ) from None
    root = _unwrap_single_folder(root)
    index = _Index(root, where, MAX_FILES if max_files is None else max_files)
    layout = _layout(root, index)
    class_dirs = {
        origin: index.folders(split_dir, "not inside a class folder; not used")
        for origin, split_dir in layout.items()
    }
    # A class is named after its folder; names that are not valid UTF-8 are shown with escapes.
    class_names = sorted({printable(d.name) for dirs in class_dirs.values() for d in dirs})
    if not class_names:
        raise UserError(
            f"{where} has no class subfolders; put the images of each class in a folder named after it."
        )
    class_ids = {name: i for i, name in enumerate(class_names)}
    listed = [
        (origin, class_ids[printable(class_dir.name)], file, status)
        for origin in sorted(class_dirs)
        for class_dir in class_dirs[origin]
        for file, status in index.files_under(class_dir)
    ]
    items, labels, origins, headers, sizes = [], [], [], [], []
    stamp = hashlib.sha1()
    for done, (origin, class_id, file, status) in enumerate(listed, start=1):
        if progress and done % PROGRESS_EVERY == 0:
            progress(done, len(listed))
        relative = os.fsencode(file.relative_to(root))
        stamp.update(relative + f"|{status.st_size}|{status.st_mtime_ns}\n".encode())
        header = _check_header(file, status.st_size)
        if isinstance(header, str):
            index.leave_out(file, header)
            continue
        items.append(str(file))
        labels.append(class_id)
        origins.append(origin)
        headers.append(header)
        sizes.append(status.st_size)
    if progress:
        progress(len(listed), len(listed))
    labels_array, origins_array = np.array(labels, dtype=np.int64), np.array(origins)
    if len(layout) > 1:
        check_training_classes(
            class_names,
            labels_array,
            origins_array,
            where,
            "add images to its folder in train/, or remove it from every split folder",
        )
    return RawSource(
        kind=kind,
        spec=where,
        class_names=class_names,
        items=items,
        labels=labels_array,
        origins=origins_array,
        fingerprint=stamp.hexdigest(),
        skipped=index.skipped,
        headers=headers,
        root=str(root),
        sizes=sizes,
    )


def _layout(root: Path, index: _Index) -> dict[str, Path]:
    """origin -> folder: the split folders when root has train/, else root as the training set."""
    entries = sorted(_visible(root))
    split_dirs: dict[str, Path] = {}
    for folder in entries:
        origin = SPLIT_FOLDERS.get(folder.name.lower())
        if origin is None or folder.is_symlink() or not folder.is_dir():
            continue
        if origin in split_dirs:
            raise UserError(
                f"{index.where} has both {split_dirs[origin].name}/ and {folder.name}/, two folders for the {origin} split; merge them into one."
            )
        split_dirs[origin] = folder
    if not split_dirs:
        _refuse_folder_of_datasets(root, index.where, entries)
        return {"train": root}  # its class folders, loose files and links are reported later
    if "train" not in split_dirs:
        found = ", ".join(f"{d.name}/" for d in split_dirs.values())
        raise UserError(
            f"{index.where} has {found} but no train/ folder; put the training images in train/<class>/ beside it, or move the class folders out of the split folders."
        )
    used = set(split_dirs.values())
    for entry in entries:
        if entry in used:
            continue
        if entry.is_symlink() and entry.is_dir():
            index.leave_out(entry, index.link_reason(entry, "folder"))
        elif entry.is_dir():
            index.leave_out(entry, "a folder beside train/ that is not a split folder; not used")
        else:
            index.count_file()
            index.leave_out(entry, "not inside a split folder; not used")
    return split_dirs


def _refuse_folder_of_datasets(root: Path, where: str, entries: list[Path]) -> None:
    """Refuse a folder one level too high, whose datasets would load as classes named after them."""
    folders = [e for e in entries if e.is_dir() and not e.is_symlink()]
    if not folders:
        return
    for folder in folders:
        try:
            inside = [e.name.lower() for e in _visible(folder) if e.is_dir()]
        except OSError:
            return
        if not any(name in SPLIT_FOLDERS for name in inside):
            return
    names = [printable(folder.name) for folder in folders]
    listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    if Path(where).is_dir():
        advice = f"load one of them, e.g. {root / names[0]}"
    else:  # a zip, extracted elsewhere: its paths mean nothing to the user
        advice = f"zip one of them on its own, e.g. {names[0]}/, and load that"
    raise UserError(
        f"{where} holds datasets ({listed}), each with its own train/test folders; {advice}."
    )


def _check_header(file: Path, size: int) -> tuple[int, int, str] | str:
    """The header of an image file, or the reason it is not usable."""
    if size == 0:
        return "empty file (0 bytes)"
    try:
        return read_header(file)
    except ImageError as error:
        return str(error)


def _visible(folder: Path) -> list[Path]:
    return [
        e for e in folder.iterdir() if not e.name.startswith(".") and e.name not in IGNORED_NAMES
    ]


def _unwrap_single_folder(root: Path) -> Path:
    """Step into lone wrapper folders, as zips of `dataset/...` usually have.

    A folder holding nothing but one folder of folders is a wrapper, unless that one folder is a
    split folder such as train/ or a link.
    """
    while True:
        entries = _visible(root)
        if (
            len(entries) == 1
            and entries[0].is_dir()
            and not entries[0].is_symlink()
            and entries[0].name.lower() not in SPLIT_FOLDERS
            and os.access(entries[0], os.R_OK | os.X_OK)
            and any(e.is_dir() for e in _visible(entries[0]))
        ):
            root = entries[0]
            continue
        return root
