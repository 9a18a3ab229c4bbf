"""Uploaded .zip and .npz files: kept in the cache under their content hash, old ones evicted.

An upload's time of last use is its modification time: saving the same file again touches it.
The folder stays bounded: uploads unused for KEEP_DAYS, or beyond the KEEP_UPLOADS most recently
used, are removed, except the ones in use (the session's dataset, any run's dataset).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from engine import runs
from engine.data import default_cache_root
from engine.jsonio import atomic_write_bytes

KEEP_UPLOADS = 16  # uploads kept, the most recently used
KEEP_DAYS = 30  # an upload not used for this long is removed
STALE_TEMPORARY_SECONDS = 86400  # a half-written upload this old belongs to no live save


def uploads_folder() -> Path:
    return default_cache_root() / "uploads"


def save_upload(name: str, data: bytes, in_use: Iterable[str | os.PathLike] = ()) -> Path:
    """Keep an uploaded zip or npz under its content hash (the engine loads it safely), then
    evict old uploads other than this one and those in_use."""
    suffix = Path(name).suffix.lower()
    digest = hashlib.sha256(data).hexdigest()[:20]
    target = uploads_folder() / f"{Path(name).stem[:40]}-{digest}{suffix}"
    if target.exists():
        os.utime(target)  # used again: the newest now
    else:
        atomic_write_bytes(target, data)
    evict_uploads(target.parent, keep=[target, *in_use])
    return target


def uploads_in_use(current_spec: str, runs_dir: Path) -> list[str]:
    """The specs that name an upload still needed: the session's dataset and every run's."""
    specs = [current_spec]
    for run in runs.list_runs(runs_dir):
        data = (run.get("config") or {}).get("data") or {}
        if isinstance(data.get("spec"), str):
            specs.append(data["spec"])
    return specs


def evict_uploads(
    folder: Path,
    keep: Iterable[str | os.PathLike] = (),
    count: int | None = None,
    days: float | None = None,
) -> list[str]:
    """Remove uploads beyond the `count` most recently used (KEEP_UPLOADS) or unused for `days`
    (KEEP_DAYS), never one named in keep; also temporary files of saves that died. Returns the
    names removed."""
    count = KEEP_UPLOADS if count is None else count
    days = KEEP_DAYS if days is None else days
    now = time.time()
    kept = {Path(path).name for path in keep if Path(path).parent == folder}
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no uploads yet
        return []
    uploads, removed = [], []
    for entry in entries:
        with contextlib.suppress(OSError):
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if entry.name.startswith("."):  # atomic_write_bytes' temporary file
                if age > STALE_TEMPORARY_SECONDS:
                    os.unlink(entry.path)
                    removed.append(entry.name)
                continue
            uploads.append((age, entry.name))
    uploads.sort()
    for position, (age, name) in enumerate(uploads):
        if name in kept or (position < count and age < days * 86400):
            continue
        with contextlib.suppress(FileNotFoundError):  # another session removed it first
            (folder / name).unlink()
            removed.append(name)
    return removed
