"""The training queue: the runs of one runs folder train one after another, behind a lock file.

A queued training process holds nothing but this wait: it imports the standard library and the
run folder's modules, and TensorFlow only once the lock is its own (a process that has imported
TensorFlow holds about 690 MB, so eight waiting runs would hold gigabytes for nothing). The queue
is bounded: a launch beyond MAX_QUEUED waiting runs is refused with a sentence.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from engine import runs  # engine.runs imports this module inside launch_run only
from engine.errors import UserError

LOCK_FILE = ".training.lock"  # in the runs folder; held by the run that trains
MAX_QUEUED = 8  # runs waiting for their turn; a launch beyond this is refused
POLL_SECONDS = 0.5


def wait_for_turn(run_dir: Path, should_stop: Callable[[], bool]) -> IO[str] | None:
    """Hold the runs folder's training lock, or None once should_stop() says so.

    The lock is released when the returned file is closed, or when the process ends in any way.
    """
    handle = open(Path(run_dir).parent / LOCK_FILE, "w")  # noqa: SIM115  held until the run ends
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if should_stop():
                handle.close()
                return None
            time.sleep(POLL_SECONDS)


def queued_runs(runs_dir: Path) -> list[Path]:
    """The runs of runs_dir waiting for their turn (queued, and their process, if any, alive)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [run_dir for run_dir in sorted(runs_dir.iterdir()) if _waiting(run_dir)]


def _waiting(run_dir: Path) -> bool:
    try:
        is_run = (run_dir / "config.json").is_file()
    except OSError:  # a folder this user may not read waits for nothing
        return False
    return is_run and runs.read_status(run_dir)["state"] == "queued"


def check_room(runs_dir: Path) -> None:
    """Raise a UserError when MAX_QUEUED runs already wait in runs_dir."""
    waiting = len(queued_runs(runs_dir))
    if waiting >= MAX_QUEUED:
        raise UserError(
            f"The training queue in {runs_dir} is full: {waiting} runs are waiting their turn "
            f"(at most {MAX_QUEUED}); wait for one to start or cancel one, then start this run again."
        )
