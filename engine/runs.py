"""The run directory: config, status, history, models, cancel requests and the list of runs.

The directory is the only channel between a training process and whoever watches it (the CLI, the
dashboard, the tests). Every JSON file is written atomically; history is appended a line at a time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import read_json, read_jsonl, write_json

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("completed", "failed", "cancelled")
CANCEL_FILE = "cancel"
PID_FILE = "pid"  # written by whoever launched the training process, before it says anything itself


def default_runs_dir() -> Path:
    return Path(os.environ.get("STUDIO_RUNS_DIR", "runs"))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dataset_label(spec: str) -> str:
    """A short, file-name-safe name for a dataset spec."""
    name = spec.removeprefix("tfds:").rstrip("/\\")
    name = (
        Path(name).stem
        if ("/" in name or "\\" in name or "." in name) and not spec.startswith("tfds:")
        else name
    )
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:32] or "data"


def create_run(config: RunConfig, runs_dir: Path | None = None) -> Path:
    """Make a new run directory holding its config and a queued status."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{config.model.name}-{dataset_label(config.data.spec)}-{secrets.token_hex(2)}"
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    write_json(run_dir / "config.json", config.to_dict())
    write_json(
        run_dir / "status.json", {"run_id": run_id, "state": "queued", "created_at": now_iso()}
    )
    return run_dir


def launch_run(config: RunConfig, runs_dir: Path | None = None) -> Path:
    """Create a run and start its training process in the background; returns the run directory."""
    run_dir = create_run(config, runs_dir).resolve()
    project_root = str(Path(__file__).resolve().parent.parent)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [project_root, environment.get("PYTHONPATH")])
    )
    with open(run_dir / "log.txt", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "train", "--run-dir", str(run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,  # closing the dashboard or its tab must not stop the run
        )
    (run_dir / PID_FILE).write_text(str(process.pid))
    return run_dir


def load_config(run_dir: Path) -> RunConfig:
    value = read_json(Path(run_dir) / "config.json")
    if value is None:
        raise UserError(
            f"{run_dir} is not a run directory (it has no config.json); pick a folder under runs/."
        )
    return RunConfig.from_dict(value)


def update_status(run_dir: Path, **changes) -> dict:
    """Merge changes into status.json (only the training process writes it)."""
    path = Path(run_dir) / "status.json"
    status = read_json(path, {}) | changes
    write_json(path, status)
    return status


def process_alive(pid: int | None) -> bool:
    """True while a process with this pid runs (a zombie counts as ended)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_status(run_dir: Path) -> dict:
    """status.json, with a run whose process died without saying so shown as failed."""
    run_dir = Path(run_dir)
    status = read_json(
        run_dir / "status.json", {"state": "failed", "error": "status.json is missing"}
    )
    if not status.get("pid") and (run_dir / PID_FILE).is_file():
        status["pid"] = int((run_dir / PID_FILE).read_text().strip() or 0)
    if (
        status.get("state") in ACTIVE_STATES
        and status.get("pid")
        and not process_alive(status.get("pid"))
    ):
        status = status | {
            "state": "failed",
            "error": f"The training process (pid {status.get('pid')}) ended without reporting; it was killed or the machine stopped.",
        }
    status.setdefault("run_id", run_dir.name)
    return status


def read_history(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(epoch rows, in-epoch step rows) from history.jsonl."""
    rows = read_jsonl(Path(run_dir) / "history.jsonl")
    return [r for r in rows if "step" not in r], [r for r in rows if "step" in r]


def request_cancel(run_dir: Path) -> dict:
    """Ask a run to stop at its next batch: a cancel file, and SIGTERM to its process."""
    run_dir = Path(run_dir)
    (run_dir / CANCEL_FILE).write_text(now_iso())
    status = read_status(run_dir)
    if (
        status.get("state") in ACTIVE_STATES
        and status.get("pid")
        and process_alive(status.get("pid"))
    ):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(status["pid"]), signal.SIGTERM)
    return status


def cancel_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / CANCEL_FILE).exists()


def model_path(run_dir: Path, which: str = "best") -> Path:
    """best.keras, falling back to last.keras."""
    run_dir = Path(run_dir)
    for name in (f"{which}.keras", "best.keras", "last.keras"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise UserError(
        f"Run {run_dir.name} has no saved model yet; wait for its first epoch or train it again."
    )


def headline(status: dict) -> dict:
    """{"accuracy", "accuracy_split"} of a status; runs evaluated before the split was recorded
    stored `test_accuracy` and no split, and their split stays unknown (None)."""
    if status.get("accuracy") is not None:
        return {"accuracy": status["accuracy"], "accuracy_split": status.get("accuracy_split")}
    return {"accuracy": status.get("test_accuracy"), "accuracy_split": None}


def list_runs(runs_dir: Path | None = None) -> list[dict]:
    """Every run with its status, config and headline metrics, newest first."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    result = []
    for run_dir in runs_dir.iterdir():
        if not (run_dir / "config.json").is_file():
            continue
        status = read_status(run_dir)
        result.append(
            {
                "run_id": run_dir.name,
                "path": str(run_dir),
                "state": status.get("state"),
                "created_at": status.get("created_at"),
                "status": status,
                "config": read_json(run_dir / "config.json", {}),
                **headline(status),
                "macro_f1": status.get("macro_f1"),
            }
        )
    return sorted(result, key=lambda r: (r["created_at"] or "", r["run_id"]), reverse=True)


def wait_for(run_dir: Path, states: tuple[str, ...] = FINAL_STATES, timeout: float = 600.0) -> dict:
    """Poll until the run reaches one of states; used by tests and scripts."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(run_dir)
        if status.get("state") in states or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
