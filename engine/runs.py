"""The run directory: config, status, history, models, cancel requests and the list of runs.

The directory is the only channel between a training process and whoever watches it (the CLI, the
dashboard, the tests). Every JSON file is written atomically; history is appended a line at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import (
    DamagedFile,
    parse_json_object,
    read_json_object,
    read_jsonl,
    write_json,
)
from engine.processes import is_run_process, process_start_time, valid_pid

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("completed", "failed", "cancelled")
CANCEL_FILE = "cancel"
PID_FILE = "pid"  # {"pid", "pid_start_time"} of the training process, written by its launcher
RESULT_FILES = ("load_report.json", "evaluation.json")  # listed as damaged when unreadable
DISK_FULL_BYTES = 2**20  # less free space than this in a run folder reads as a full disk
RUN_ID_TRIES = 100  # random run-folder suffixes tried before giving up


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
    """Make a new run directory holding its config and a queued status.

    The config is validated first: a refused value leaves no run folder."""
    config.validate()
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    from engine.run_admin import default_name  # run_admin builds on this module

    name = default_name(runs_dir, config)
    run_dir = _new_run_folder(runs_dir, config)
    run_id = run_dir.name
    write_json(run_dir / "config.json", config.to_dict())
    write_json(
        run_dir / "status.json",
        {"run_id": run_id, "name": name, "state": "queued", "created_at": now_iso()},
    )
    return run_dir


def _new_run_folder(runs_dir: Path, config: RunConfig) -> Path:
    """Make a run folder named by the time, model, data and a random suffix. Two runs created in
    the same second (a script, the queue, the tests) may draw the same suffix: mkdir refuses an
    existing folder, so another suffix is drawn and no run ever shares another's folder."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    prefix = f"{stamp}-{config.model.name}-{dataset_label(config.data.spec)}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(RUN_ID_TRIES):
        run_dir = runs_dir / f"{prefix}-{secrets.token_hex(2)}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise UserError(
        f"No free run folder name in {runs_dir} after {RUN_ID_TRIES} tries; start the run again."
    )


def launch_run(config: RunConfig, runs_dir: Path | None = None) -> Path:
    """Create a run and start its training process in the background; returns the run directory."""
    from engine.run_queue import check_room  # a full queue is refused before a folder is made

    check_room(Path(runs_dir) if runs_dir else default_runs_dir())
    run_dir = create_run(config, runs_dir).resolve()
    start_worker(run_dir)
    return run_dir


def start_worker(run_dir: Path) -> None:
    """Start `python -m engine.training RUN_DIR` in the background for a run folder."""
    project_root = str(Path(__file__).resolve().parent.parent)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [project_root, environment.get("PYTHONPATH")])
    )
    with open(run_dir / "log.txt", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.training", str(run_dir)],
            # The worker ignores SIGTERM from its start (the setting survives exec) until it
            # installs its own handler, so a cancel while Python starts ends as "cancelled". The
            # child runs only this C function before exec: no import, no Python lock.
            preexec_fn=functools.partial(signal.signal, signal.SIGTERM, signal.SIG_IGN),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,  # closing the dashboard or its tab must not stop the run
        )
    write_json(
        run_dir / PID_FILE,
        {"pid": process.pid, "pid_start_time": process_start_time(process.pid)},
    )


def load_config(run_dir: Path) -> RunConfig:
    run_dir = Path(run_dir)
    try:
        value = read_json_object(run_dir / "config.json")
    except DamagedFile as error:
        raise UserError(
            f"Run {run_dir.name} cannot be used: {error.reason}; train it again or delete its folder."
        ) from None
    if value is None:
        raise UserError(
            f"{run_dir} is not a run directory (it has no config.json); pick a folder under runs/."
        )
    return RunConfig.from_dict(value)


@contextlib.contextmanager
def status_lock(run_dir: Path):
    """Hold run_dir's status lock: the trainer and a rename or note never lose each other's change.
    Not reentrant: inside it, write status.json directly, not through update_status."""
    try:
        handle = open(Path(run_dir) / ".status.lock", "a")  # noqa: SIM115
    except OSError:  # a full disk or a missing folder: the write itself says what is wrong
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def update_status(run_dir: Path, **changes) -> dict:
    """Merge changes into status.json (the training process, and a run's name and notes)."""
    path = Path(run_dir) / "status.json"
    with status_lock(run_dir):
        try:
            status = read_json_object(path) or {}
        except DamagedFile:
            status = {}  # the writer's own fields replace a damaged file
        status |= changes
        write_json(path, status)
    return status


def _read_pid_file(run_dir: Path) -> dict:
    """{"pid", "pid_start_time"} from the pid file ({} without one); DamagedFile when unusable."""
    path = run_dir / PID_FILE
    try:
        data = path.read_bytes()[:4096]
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise DamagedFile(path, f"the pid file cannot be read ({error.strerror})") from None
    if data.strip().isdigit():  # the plain number earlier versions wrote
        value = {"pid": int(data.strip())}
    else:
        value = parse_json_object(data, path)
    if valid_pid(value.get("pid")) is None:
        raise DamagedFile(path, f"the pid file names no process ({str(value.get('pid'))[:20]})")
    return {key: value[key] for key in ("pid", "pid_start_time") if key in value}


def _config_damage(run_dir: Path) -> tuple[dict, str | None]:
    """(config.json's object, or {} when damaged, and why it is damaged)."""
    try:
        config = read_json_object(run_dir / "config.json") or {}
    except DamagedFile as error:
        return {}, error.reason
    for name, section in config.items():
        if not isinstance(section, dict):
            return {}, f"config.json's section {str(name)[:40]!r} is not a JSON object"
    return config, None


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_BYTES
    except OSError:
        return False


def read_status(run_dir: Path) -> dict:
    """status.json, with a run whose process died without saying so, or that is damaged (its
    status, config or pid file cannot be read), shown as failed with the reason."""
    run_dir = Path(run_dir)
    damage = []
    try:
        status = read_json_object(run_dir / "status.json")
    except DamagedFile as error:
        status, damage = {}, [error.reason]
    if status is not None:
        status.pop("damaged", None)  # only this function says so
    else:
        status = {"state": "failed", "error": "status.json is missing"}
    if "pid" not in status:
        try:
            status |= _read_pid_file(run_dir)
        except DamagedFile as error:
            damage.append(error.reason)
    state = status.get("state")
    if not damage and state not in (*ACTIVE_STATES, *FINAL_STATES):
        damage.append(f"status.json names no known state ({str(state)[:40]!r})")
    damage.append(_config_damage(run_dir)[1])
    damaged = "; ".join(filter(None, damage))
    if damaged:
        status = status | {
            "state": "failed",
            "damaged": damaged,
            "error": f"Run {run_dir.name} is damaged: {damaged}; train it again or delete its folder.",
        }
    elif state in ACTIVE_STATES and "pid" in status and not is_run_process(status):
        why = f" because the disk is full at {run_dir}" if _disk_full(run_dir) else ""
        status = status | {
            "state": "failed",
            "error": f"The training process (pid {str(status.get('pid'))[:20]}) ended without "
            f"reporting{why}; it was killed or the machine stopped.",
        }
    status.setdefault("run_id", run_dir.name)
    return status


def read_history(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(epoch rows, in-epoch step rows) from history.jsonl; lines that are not objects are left out."""
    rows = read_jsonl(Path(run_dir) / "history.jsonl")
    return [r for r in rows if "step" not in r], [r for r in rows if "step" in r]


def request_cancel(run_dir: Path) -> dict:
    """Ask a run to stop at its next batch: a cancel file, and SIGTERM to its own process only."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(
            f"{run_dir} is not a run directory (it has no config.json); pick a folder under runs/."
        )
    (run_dir / CANCEL_FILE).write_text(now_iso())
    status = read_status(run_dir)
    # A pid from the run folder is only trusted once /proc proves it is this run's trainer: after a
    # kill -9 or a reboot the number may belong to any process, and -1 would mean all of them.
    if status.get("state") in ACTIVE_STATES and is_run_process(status):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(status["pid"], signal.SIGTERM)
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


# Listing lives in its own module; importing it last keeps `runs.list_runs` and friends working.
from engine.run_list import describe_run, headline, list_runs, wait_for  # noqa: E402, F401
