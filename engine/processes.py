"""Which process a run's pid names: a pid is only trusted when the process's start time (from
/proc) matches the one stored beside it, so a reused pid is never signalled."""

from __future__ import annotations

import os
from pathlib import Path


def valid_pid(value) -> int | None:
    """value when it can name one process: an int above 0 (not a bool, not -1 = every process)."""
    return value if type(value) is int and 0 < value < 2**31 else None


def process_start_time(pid: int) -> int | None:
    """When the process started (clock ticks after boot, /proc/PID/stat field 22); None if gone.

    Stored beside the pid, it tells the run's own trainer from a later process given the same pid.
    """
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 and fields[19].isdigit() else None


def _proc_stat(pid) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    if valid_pid(pid) is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None) -> bool:
    """True while a process with this pid runs (a zombie counts as ended)."""
    pid = valid_pid(pid)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    return fields is None or fields[0] != "Z"


def is_run_process(status: dict) -> bool:
    """True when status's pid is a live process proven to be this run's trainer: its start time
    matches the one stored beside the pid (a run that stored none cannot prove it)."""
    pid, started = valid_pid(status.get("pid")), status.get("pid_start_time")
    if pid is not None and not Path("/proc/self/stat").exists():  # not Linux: liveness only
        return process_alive(pid)
    fields = _proc_stat(pid)
    return (
        bool(fields)
        and fields[0] != "Z"
        and type(started) is int
        and fields[19:20] == [str(started)]
    )
