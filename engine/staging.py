"""Temporary files and folders beside their target, named after the process that writes them.

Big outputs (a decoded cache, an unpacked zip, a tfds store, an export) are written under a
hidden temporary name and renamed into place when complete, so a failure never leaves a
half-written one. A process killed outright (SIGKILL, the machine's power) cannot remove its
temporary, though, and a decoded cache's temporary can be gigabytes. So each temporary's name
carries its writer's pid and that process's start time, `.{target}.{pid}-{start}.{random}.tmp`,
and the next writer of the same target removes those whose writer is gone. A pid is trusted
only with its start time (engine.processes), so another process's work in progress, or a
process given a dead writer's pid, is never mistaken for a leftover.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from engine import processes

SUFFIX = ".tmp"
_TAG = re.compile(r"(\d+)-(\d+)\.")


def owner_tag() -> str:
    """This process's pid and start time, as staged names carry them."""
    pid = os.getpid()
    return f"{pid}-{processes.process_start_time(pid) or 0}"


def staging_folder(target: Path) -> Path:
    """A new empty folder beside target, after the leftovers of killed writers are removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=_prefix(target), suffix=SUFFIX))


def staging_file(target: Path) -> Path:
    """A new empty file beside target, after the leftovers of killed writers are removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=_prefix(target), suffix=SUFFIX)
    os.close(descriptor)
    return Path(name)


def aside_path(target: Path, label: str) -> Path:
    """A new, unused temporary name beside target to move something aside to (not created): a
    writer killed before removing it leaves a leftover the next writer removes."""
    target = Path(target)
    return target.with_name(f"{_prefix(target)}{label}-{secrets.token_hex(4)}{SUFFIX}")


def remove_leftovers(target: Path) -> list[Path]:
    """Remove the temporaries of target whose writer no longer runs; the paths removed.

    Names without a writer's tag (not made here) are left alone.
    """
    target = Path(target)
    removed = []
    pattern = f".{glob.escape(target.name)}.*{SUFFIX}"
    for path in target.parent.glob(pattern):
        match = _TAG.match(path.name[len(target.name) + 2 :])
        if match is None:
            continue
        pid, started = int(match[1]), int(match[2])
        owner = {"pid": pid, "pid_start_time": started or None}
        if processes.is_run_process(owner):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _prefix(target: Path) -> str:
    return f".{target.name}.{owner_tag()}."
