"""Zips as a source: checked, extracted once into the cache, then indexed as a folder.

Extraction never writes outside its folder and never more than the free disk space. Entries it
will not write are listed in the load report with their reason: paths that leave the archive,
links, zip-bomb ratios, unreadable or corrupt data, a file named like a folder. A password-protected
zip is refused. Loads of the same zip at once extract it once (a lock, then an atomic rename of a
complete folder), and extractions not used for a while are evicted.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from engine.data.extractions import evict_extractions, locked
from engine.data.folders import load_folder_source
from engine.data.sources import RawSource, human_size, source_hash
from engine.errors import UserError
from engine.jsonio import read_json, write_json
from engine.staging import staging_folder

MAX_ZIP_BYTES = 8 * 1024**3
MAX_ZIP_ENTRIES = 2_000_000
# Images barely compress (JPEG and PNG are compressed already); a zip bomb's data does, a
# thousandfold. Small entries are exempt: a tiny blank image can compress well.
MAX_RATIO = 200
RATIO_EXEMPT_BYTES = 1 << 20
DISK_MARGIN_BYTES = 256 * 1024**2  # left free after extracting, for the decoded cache and runs
NAME_MAX_BYTES = 255  # the longest file name Linux file systems allow
SKIPPED_FILE = ".studio-skipped.json"  # inside an extracted zip: the entries left out and why
UTF8_FLAG = 0x800  # zip flag bit 11: the name is UTF-8; without it the name is cp437 bytes
ENCRYPTED_FLAG = 0x1


def load_zip_source(
    path: str, cache_root: Path, max_bytes: int = MAX_ZIP_BYTES, progress=None
) -> RawSource:
    """A .zip of a class-subfolder tree, extracted safely once into the cache."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"The file {path} does not exist; check the path.")
    status = file.stat()
    key = source_hash("zip", file.resolve(), status.st_size, status.st_mtime_ns)[:16]
    folder = Path(cache_root) / "unzipped"
    target = folder / key
    with locked(folder, key):
        skipped = _read_skipped(target)
        if skipped is None:
            skipped = extract_zip_safely(file, target, max_bytes)
        os.utime(target)  # its time of last use, for eviction
    evict_extractions(folder, keep=target)
    source = load_folder_source(str(target), kind="zip", spec=str(path), progress=progress)
    source.skipped = skipped + source.skipped
    source.fingerprint = source_hash("zip", key, source.fingerprint)
    return source


def extract_zip_safely(file: Path, target: Path, max_bytes: int = MAX_ZIP_BYTES) -> list[dict]:
    """Extract into target; the entries left out are returned with their reasons."""
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise UserError(
            f"{file.name} is not a readable zip archive ({error}); re-create the zip and upload it again."
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive:
        plan, skipped = _plan(archive, file.name, max_bytes)
        needed = sum(entry.file_size for entry, _ in plan)
        free = _free_bytes(target.parent)
        if needed + DISK_MARGIN_BYTES > free:
            raise UserError(
                f"Unpacking {file.name} needs {human_size(needed + DISK_MARGIN_BYTES)} but {target.parent} has {human_size(free)} free; free some disk space and load it again."
            )
        staging = staging_folder(target)
        try:
            for entry, parts in plan:
                reason = _extract_entry(archive, entry, staging.joinpath(*parts), file.name)
                if reason:
                    skipped.append({"file": _entry_name(entry), "reason": reason})
            # The skipped list goes in before the rename, so an extracted folder always has it.
            write_json(staging / SKIPPED_FILE, skipped)
            try:
                os.replace(staging, target)
            except OSError:
                # Another process finished the same zip first: its folder is as good as ours.
                # A damaged one is removed by _read_skipped, and ours takes its place.
                if _read_skipped(target) is None:
                    os.replace(staging, target)
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return skipped


# ----- planning: which entries to write, and where ------------------------------------------
def _plan(
    archive: zipfile.ZipFile, zip_name: str, max_bytes: int
) -> tuple[list[tuple[zipfile.ZipInfo, tuple[str, ...]]], list[dict]]:
    """(entry, path parts) for each entry to extract, and the entries left out with their reasons."""
    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise UserError(
            f"{zip_name} has {len(entries):,} entries, over the limit of {MAX_ZIP_ENTRIES:,}; split it into smaller zips."
        )
    encrypted = [entry for entry in entries if entry.flag_bits & ENCRYPTED_FLAG]
    if encrypted:
        verb = "is" if len(encrypted) == 1 else "are"
        raise UserError(
            f"{zip_name} is password-protected ({len(encrypted):,} of its {len(entries):,} entries {verb} encrypted, such as {_entry_name(encrypted[0])}); unzip it with its password and load the folder instead."
        )
    skipped: list[dict] = []
    files: dict[tuple[str, ...], zipfile.ZipInfo] = {}
    folders: set[tuple[str, ...]] = set()
    for entry in entries:
        name = _entry_name(entry)
        path = PurePosixPath(name.replace("\\", "/"))
        if (
            path.is_absolute()
            or ".." in path.parts
            or (entry.external_attr >> 16) & 0o170000 == 0o120000
        ):
            skipped.append(
                {"file": name, "reason": "unsafe path or link outside the archive; not extracted"}
            )
            continue
        parts = tuple(_fit_name(part) for part in path.parts)
        if name.endswith(("/", "\\")) or entry.is_dir():
            folders.add(parts)
            continue
        if not parts:
            skipped.append({"file": name, "reason": "an entry without a file name; not extracted"})
        elif parts in files:
            skipped.append(
                {"file": name, "reason": "a second entry with the same name; not extracted"}
            )
        elif entry.file_size >= RATIO_EXEMPT_BYTES and entry.file_size > MAX_RATIO * max(
            entry.compress_size, 1
        ):
            ratio = entry.file_size / max(entry.compress_size, 1)
            skipped.append(
                {
                    "file": name,
                    "reason": f"compressed {ratio:,.0f} to 1 ({human_size(entry.file_size)} from {human_size(entry.compress_size)}), like a zip bomb; not extracted",
                }
            )
        else:
            files[parts] = entry
    for parts in files:
        folders.update(parts[:end] for end in range(1, len(parts)))
    plan = []
    for parts, entry in files.items():
        if parts in folders:
            skipped.append(
                {
                    "file": _entry_name(entry),
                    "reason": "a file with the same name as a folder in the archive; not extracted",
                }
            )
        else:
            plan.append((entry, parts))
    declared = sum(entry.file_size for entry, _ in plan)
    if declared > max_bytes:
        raise UserError(
            f"{zip_name} unpacks to {human_size(declared)}, over the limit of {human_size(max_bytes)}; split it or load the folder directly."
        )
    return plan, skipped


def _entry_name(entry: zipfile.ZipInfo) -> str:
    """The entry's name; a name without the UTF-8 flag that is valid UTF-8 is read as UTF-8.

    Zip tools that predate the flag wrote names in the system's encoding: cp437, which is how
    Python reads them, or UTF-8 without saying so (common on Linux and macOS).
    """
    if entry.flag_bits & UTF8_FLAG:
        return entry.filename
    try:
        return entry.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return entry.filename


def _fit_name(part: str) -> str:
    """A name the file system accepts: one over NAME_MAX_BYTES is shortened, keeping its suffix
    and adding a hash of the whole name, so two long names stay two files."""
    encoded = part.encode("utf-8", "surrogateescape")
    if len(encoded) <= NAME_MAX_BYTES:
        return part
    suffix = PurePosixPath(part).suffix if len(PurePosixPath(part).suffix) <= 16 else ""
    mark = "~" + hashlib.sha1(encoded).hexdigest()[:10]
    room = NAME_MAX_BYTES - len(suffix.encode()) - len(mark)
    stem = encoded[:room].decode("utf-8", "ignore")  # never cut a character in half
    return stem + mark + suffix


# ----- writing ---------------------------------------------------------------------------------
def _extract_entry(
    archive: zipfile.ZipFile, entry: zipfile.ZipInfo, destination: Path, zip_name: str
) -> str:
    """Write one entry; the reason it was left out, or "" when it was written whole."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        writer = open(destination, "xb")  # noqa: SIM115 (closed below, after the reader)
    except OSError as error:
        _raise_if_disk_full(error, destination, zip_name)
        return f"cannot be written on this system ({error.strerror}); not extracted"
    reason = "interrupted"
    try:
        with writer:
            reason = _copy(archive, entry, writer, destination, zip_name)
    finally:
        if reason:  # never leave part of a file behind
            destination.unlink(missing_ok=True)
    return reason


def _copy(
    archive: zipfile.ZipFile, entry: zipfile.ZipInfo, writer: Any, destination: Path, zip_name: str
) -> str:
    try:
        reader = archive.open(entry)
    except NotImplementedError as error:
        return f"stored with a compression this program cannot read ({error}); not extracted"
    with reader:
        while True:
            try:
                chunk = reader.read(1 << 20)
            except Exception as error:  # each decompressor has its own error for damaged data
                return f"corrupt zip entry ({error}); not extracted"
            if not chunk:
                return ""
            try:
                writer.write(chunk)
            except OSError as error:
                _raise_if_disk_full(error, destination, zip_name)
                return f"cannot be written on this system ({error.strerror}); not extracted"


def _raise_if_disk_full(error: OSError, destination: Path, zip_name: str) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise UserError(
            f"The disk is full at {destination.parent}; free some space and load {zip_name} again."
        ) from None


def _read_skipped(target: Path) -> list[dict] | None:
    """The left-out list of a complete extraction, or None when there is none (or it is damaged)."""
    try:
        skipped = read_json(target / SKIPPED_FILE)
    except (OSError, ValueError):
        skipped = None
    if not isinstance(skipped, list) or not all(isinstance(item, dict) for item in skipped):
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)  # damaged: extract it again
        return None
    return skipped


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free
