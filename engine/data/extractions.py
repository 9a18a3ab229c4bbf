"""The cache of extracted zips: one lock per extraction, and eviction of those not used lately.

Each extraction is a folder under `cache_root/unzipped/`, renamed into place complete; its time of
last use is its modification time. A load holds the extraction's lock while it checks or writes
it, so loads of one zip at once (threads or processes) extract it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

KEEP_EXTRACTIONS = 16  # extractions kept in the cache, the most recently used
KEEP_DAYS = 30  # an extraction not used for this long is removed


@contextlib.contextmanager
def locked(folder: Path, key: str, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of one extraction; yields False when wait is False and another load has it.

    flock works between processes and between threads alike: each call opens its own descriptor.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{key}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def evict_extractions(
    folder: Path, keep: Path | None = None, count: int | None = None, days: float | None = None
) -> list[str]:
    """Remove extractions beyond the `count` most recently used (KEEP_EXTRACTIONS) or unused for
    `days` (KEEP_DAYS); returns their names.

    An extraction whose lock another load holds is left alone, as is `keep`. Staging folders of
    extractions that died half-way are removed after a day.
    """
    count = KEEP_EXTRACTIONS if count is None else count
    days = KEEP_DAYS if days is None else days
    now = time.time()
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    extractions = []
    for entry in entries:
        with contextlib.suppress(OSError):
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                extractions.append((age, entry.name))
            elif entry.name.startswith(".") and entry.is_dir(follow_symlinks=False) and age > 86400:
                shutil.rmtree(entry.path, ignore_errors=True)
            elif (
                entry.name.endswith(".lock")
                and age > days * 86400
                and not (folder / entry.name[1 : -len(".lock")]).exists()
            ):
                os.unlink(entry.path)
    extractions.sort()
    for position, (age, name) in enumerate(extractions):
        if (keep is not None and name == keep.name) or (position < count and age < days * 86400):
            continue
        with locked(folder, name, wait=False) as held:
            if not held:
                continue
            doomed = folder / f".evicted-{name}-{os.getpid()}"
            try:
                os.replace(folder / name, doomed)
            except OSError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            # A load waiting on this lock finds no extraction and makes its own; a rename race
            # between two such loads is settled in engine.data.zips.extract_zip_safely.
            (folder / f".{name}.lock").unlink(missing_ok=True)
            removed.append(name)
    return removed
