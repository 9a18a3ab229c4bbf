"""Listing runs: one row per run folder, read defensively (engine.runs re-exports these)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from engine.jsonio import json_object_damage
from engine.runs import (
    FINAL_STATES,
    RESULT_FILES,
    _config_damage,
    default_runs_dir,
    read_status,
)


def headline(status: dict) -> dict:
    """{"accuracy", "accuracy_split"} of a status; runs evaluated before the split was recorded
    stored `test_accuracy` and no split, and their split stays unknown (None)."""
    split = status.get("accuracy_split")
    if _number(status.get("accuracy")) is not None:
        return {
            "accuracy": status["accuracy"],
            "accuracy_split": split if isinstance(split, str) else None,
        }
    return {"accuracy": _number(status.get("test_accuracy")), "accuracy_split": None}


def _number(value) -> float | int | None:
    """A finite number from a status field, else None (a hand-edited or foreign status.json)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def list_runs(runs_dir: Path | None = None) -> list[dict]:
    """Every run with its status, config and headline metrics, newest first; a run with a file
    that cannot be read is listed with "damaged" naming it (None for a sound run)."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    # A dot-folder is a run being deleted (engine.run_admin.delete_run), or no run at all.
    result = [
        describe_run(run_dir)
        for run_dir in runs_dir.iterdir()
        if not run_dir.name.startswith(".") and _is_run(run_dir)
    ]
    return sorted(result, key=lambda r: (r["created_at"] or "", r["run_id"]), reverse=True)


def _is_run(run_dir: Path) -> bool:
    try:
        return (run_dir / "config.json").is_file()
    except OSError:  # a folder this user may not read: listed, with the reason, as damaged
        return run_dir.is_dir()


def describe_run(run_dir: Path) -> dict:
    """One run as list_runs gives it: "name" is its name (its id without one), "notes" its notes."""
    from engine.run_admin import display_name

    run_dir = Path(run_dir)
    status = read_status(run_dir)
    created_at = status.get("created_at")
    damage = [status.get("damaged"), *(json_object_damage(run_dir / name) for name in RESULT_FILES)]
    notes = status.get("notes_text")
    return {
        "run_id": run_dir.name,
        "name": display_name(status),
        "notes": notes if isinstance(notes, str) else "",
        "path": str(run_dir),
        "state": status["state"],
        "created_at": created_at if isinstance(created_at, str) else None,
        "status": status,
        "config": _config_damage(run_dir)[0],
        **headline(status),
        "macro_f1": _number(status.get("macro_f1")),
        "damaged": "; ".join(filter(None, damage)) or None,
    }


def wait_for(run_dir: Path, states: tuple[str, ...] = FINAL_STATES, timeout: float = 600.0) -> dict:
    """Poll until the run reaches one of states; used by tests and scripts."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(run_dir)
        if status.get("state") in states or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
