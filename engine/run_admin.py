"""Managing runs once they exist: readable names, notes, deleting, and continuing from a checkpoint.

The run id stays the folder name; a run's name and notes live in its status.json ("name" and
"notes_text": "notes" already holds the recipe's notes). Continuing a run trains more epochs into
the same folder: prepare_resume() checks the run and writes resume.json, and the worker
(engine.training, then engine.fit_run with engine.continuation) does the rest. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from engine import continuation, runs
from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import DamagedFile, read_json_object, write_json

NAME_MAX = 60
NOTES_MAX = 2000
# Fields of the previous process that a continuation must not inherit.
PROCESS_KEYS = ("pid", "pid_start_time", "error", "ended_at", "message", "damaged")


def display_name(status_or_row: dict) -> str:
    """A run's name (from its status or a list_runs row), or its run id when it has none."""
    for source in (status_or_row, status_or_row.get("status")):
        name = source.get("name") if isinstance(source, dict) else None
        if isinstance(name, str) and name.strip():
            return name.strip()
    return str(status_or_row.get("run_id") or "")


def default_name(runs_dir: Path, config: RunConfig) -> str:
    """`<model>-<dataset label>-<n>`, the next n not taken in runs_dir: "residual_cnn-flowers128-3"."""
    prefix = f"{config.model.name}-{runs.dataset_label(config.data.spec)}"[: NAME_MAX - 6]
    taken = _names(Path(runs_dir))
    numbers = [
        int(name[len(prefix) + 1 :])
        for name in taken
        if name.startswith(prefix.casefold() + "-") and name[len(prefix) + 1 :].isdigit()
    ]
    number = max(numbers, default=0) + 1
    while f"{prefix}-{number}".casefold() in taken:
        number += 1
    return f"{prefix}-{number}"


def set_name(run_dir: Path, name: str) -> str:
    """Give a run a short readable name, unique in its runs folder; returns the name stored."""
    run_dir = _require_run(run_dir)
    if not isinstance(name, str):
        raise UserError("A run's name must be text; type a short name such as 'flowers-baseline'.")
    name = name.strip()
    if not name:
        raise UserError(
            "A run's name cannot be empty; type a short name such as 'flowers-baseline'."
        )
    if len(name) > NAME_MAX:
        raise UserError(
            f"A run's name can have at most {NAME_MAX} characters, not {len(name)}; shorten it."
        )
    if not name.isprintable():
        raise UserError(
            "A run's name must be one line of printable text (no tabs, line breaks or control "
            "characters); type it again."
        )
    if name.casefold() in _names(run_dir.parent, skip=run_dir.name):
        raise UserError(f"Another run is already named '{name}'; choose a different name.")
    runs.update_status(run_dir, name=name)
    return name


def set_notes(run_dir: Path, notes: str) -> str:
    """Store free-text notes about a run (at most NOTES_MAX characters); returns what was stored."""
    run_dir = _require_run(run_dir)
    if not isinstance(notes, str):
        raise UserError("A run's notes must be text.")
    notes = notes.strip()
    if len(notes) > NOTES_MAX:
        raise UserError(
            f"A run's notes can have at most {NOTES_MAX:,} characters, not {len(notes):,}; "
            "shorten them."
        )
    runs.update_status(run_dir, notes_text=notes)
    return notes


def delete_run(run_dir: Path) -> None:
    """Delete a run's folder, never while it is queued or training, never a folder that is no run.

    The folder is first renamed to a hidden name in the same runs folder (atomic: the run leaves
    every listing at once, whole), then removed."""
    run_dir = _require_run(run_dir)
    status = runs.read_status(run_dir)
    if status.get("state") in runs.ACTIVE_STATES:
        raise UserError(
            f"Run {display_name(status)} is {status['state']}; cancel it and wait for it to "
            "stop before deleting it."
        )
    doomed = run_dir.parent / f".deleting-{run_dir.name}-{secrets.token_hex(4)}"
    try:
        os.rename(run_dir, doomed)
    except OSError as error:
        raise UserError(
            f"Run {run_dir.name} could not be deleted ({error.strerror}); check the permissions "
            f"of {run_dir.parent}."
        ) from None
    try:
        shutil.rmtree(doomed)
    except OSError as error:
        raise UserError(
            f"Run {run_dir.name} is gone from the list, but {doomed} could not be removed "
            f"completely ({error.strerror}); delete that folder by hand."
        ) from None


def prepare_resume(run_dir: Path, epochs: int) -> dict:
    """Check that a run can continue for `epochs` more epochs and queue it; returns the request.

    Refused while the run is queued or training, when it is damaged or has no checkpoint."""
    run_dir = _require_run(run_dir)
    if type(epochs) is not int or epochs < 1:
        raise UserError(
            f"The number of epochs to continue for must be a whole number of at least 1, not {epochs!r}."
        )
    config = runs.load_config(run_dir)
    with runs.status_lock(run_dir):  # two Continue clicks queue one continuation
        status = runs.read_status(run_dir)
        name = display_name(status)
        if status.get("damaged"):
            raise UserError(
                f"Run {name} cannot be continued: {status['damaged']}; train it again instead."
            )
        if status.get("state") in runs.ACTIVE_STATES:
            raise UserError(
                f"Run {name} is {status['state']}; wait for it to end, or cancel it, before "
                "continuing it."
            )
        checkpoint, epoch = continuation.latest_checkpoint(run_dir)
        config.replace(train={"epochs": epoch + epochs}).validate()
        request = {
            "checkpoint": checkpoint,
            "from_epoch": epoch,
            "epochs": epochs,
            "total_epochs": epoch + epochs,
            "requested_at": runs.now_iso(),
        }
        write_json(run_dir / continuation.RESUME_FILE, request)
        for stale in (runs.CANCEL_FILE, runs.PID_FILE):
            (run_dir / stale).unlink(missing_ok=True)
        kept = {
            key: value
            for key, value in (read_json_object(run_dir / "status.json") or {}).items()
            if key not in PROCESS_KEYS
        }
        write_json(
            run_dir / "status.json",
            kept
            | {
                "state": "queued",
                "phase": "waiting for other runs to finish",
                "epochs": epoch + epochs,
                "resumed_from_epoch": epoch,
                "eta_seconds": None,
            },
        )
    return request


def resume_run(run_dir: Path, epochs: int, runs_dir: Path | None = None) -> Path:
    """Continue a run for `epochs` more epochs in a worker process of its own, through the queue
    of its runs folder (runs_dir, by default the run's parent); returns the run folder."""
    from engine.run_queue import check_room

    run_dir = Path(run_dir).resolve()
    check_room(Path(runs_dir) if runs_dir else run_dir.parent)
    prepare_resume(run_dir, epochs)
    try:
        runs.start_worker(run_dir)
    except OSError as error:
        runs.update_status(
            run_dir,
            state="failed",
            ended_at=runs.now_iso(),
            error=f"The training process could not be started ({error.strerror}); try again.",
        )
        raise UserError(
            f"The training process for run {run_dir.name} could not be started ({error.strerror}); "
            "try again."
        ) from None
    return run_dir


def _require_run(run_dir: Path) -> Path:
    """run_dir when it is a run folder (it holds config.json or status.json), else a UserError."""
    run_dir = Path(run_dir)
    if (
        run_dir.is_symlink()
        or not run_dir.is_dir()
        or not any((run_dir / name).is_file() for name in ("config.json", "status.json"))
    ):
        raise UserError(
            f"{run_dir} is not a run folder (it has no config.json or status.json); pick a "
            "folder under runs/."
        )
    return run_dir


def _names(runs_dir: Path, skip: str = "") -> set[str]:
    """The names (case-folded) of the runs in runs_dir, except the run folder named skip."""
    taken: set[str] = set()
    if not runs_dir.is_dir():
        return taken
    for folder in runs_dir.iterdir():
        if folder.name == skip or folder.name.startswith("."):
            continue
        try:
            status = read_json_object(folder / "status.json") or {}
        except DamagedFile:
            continue
        if isinstance(status.get("name"), str):
            taken.add(status["name"].strip().casefold())
    return taken
