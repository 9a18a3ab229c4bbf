"""The training worker: the process concerns of one run (priority, signals, its turn, its end).

`train_run(run_dir)` is what `python -m engine.training RUN_DIR` (started by engine.runs.launch_run)
and `python -m engine train` run in their own process. It lowers its priority, turns SIGTERM/SIGINT
into a cancel, waits its turn behind other runs (engine.run_queue), and only then imports
TensorFlow: engine.fit_run loads the data, fits epochs=0 to the time budget and trains with the
callbacks that write into the run folder. The worker evaluates at the end and writes the final
status, also on a full disk. Until its turn comes, nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import TextIO

from engine import continuation, distributed, processes, runs
from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import DamagedFile, dumps, overwrite_json_in_place, read_json_object
from engine.run_queue import wait_for_turn

NICENESS = 5
# What a final status keeps when a full disk leaves room only to rewrite status.json in place.
FINAL_KEYS = ("run_id", "state", "created_at", "ended_at", "error", "pid", "pid_start_time")


def train_run(run_dir: Path, echo: TextIO | None = None) -> dict:
    """Train the run in run_dir in this process; returns its final status."""
    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    # Training takes every core it can; a slightly lower priority keeps the dashboard and the
    # machine responsive while costing the run almost nothing.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    cancel_flag = {"set": False}

    def on_signal(signum, frame):
        cancel_flag["set"] = True
        with contextlib.suppress(OSError):
            (run_dir / runs.CANCEL_FILE).touch()

    lock = None
    resume = None
    try:
        resume = continuation.pending_resume(run_dir)
        # SIGTERM was ignored until here (engine.runs.start_worker): from now on it cancels.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # The start time beside the pid lets a cancel prove this process is the run's trainer.
        runs.update_status(
            run_dir,
            pid=os.getpid(),
            pid_start_time=processes.process_start_time(os.getpid()),
            state="queued",
            phase="waiting for other runs to finish",
        )
        lock = wait_for_turn(run_dir, lambda: cancel_flag["set"] or runs.cancel_requested(run_dir))
        if lock is None or cancel_flag["set"] or runs.cancel_requested(run_dir):
            start = int(resume["from_epoch"]) if resume else 0
            return _end(
                run_dir,
                state="cancelled",
                ended_at=runs.now_iso(),
                phase="cancelled",
                message=continuation.cancelled_early(start),
            )
        runs.update_status(
            run_dir, state="running", started_at=runs.now_iso(), phase="starting TensorFlow"
        )
        result = _train(config, run_dir, cancel_flag, echo)
        state = "cancelled" if result.get("cancelled") else "completed"
        # A continuation cancelled after new epochs may have a new best.keras: evaluate it, so
        # evaluation.json never describes a model the run no longer has.
        continued = resume is not None and result.get("epochs_done", 0) > resume["from_epoch"]
        if (state == "completed" or continued) and distributed.is_chief():
            runs.update_status(run_dir, phase="evaluating")
            from engine.evaluation import evaluate_run

            evaluation = evaluate_run(run_dir)
            if echo:
                print(
                    f"{evaluation.get('split_label', evaluation['split'] + ' accuracy')} "
                    f"{evaluation['accuracy']:.4f} on {evaluation['count']} images",
                    file=echo,
                    flush=True,
                )
        return _end(run_dir, state=state, ended_at=runs.now_iso(), phase=state, **result)
    except UserError as error:
        return _end(run_dir, state="failed", ended_at=runs.now_iso(), error=str(error))
    except Exception as error:
        if (full := disk_full_error(error)) is not None:
            return _end(run_dir, **_disk_full_status(run_dir, full))
        # Anything else is a bug: keep its traceback beside the run.
        with contextlib.suppress(OSError):
            (run_dir / "error.log").write_text(traceback.format_exc())
        message = f"{type(error).__name__}: {error}".strip()
        return _end(
            run_dir,
            state="failed",
            ended_at=runs.now_iso(),
            error=f"Training stopped with an internal error ({message[:300]}); see error.log in the run folder.",
        )
    finally:
        if lock is not None:
            lock.close()
        if resume is not None:
            continuation.finish_resume(run_dir)


def disk_full_error(error: BaseException | None) -> OSError | None:
    """The "no space left on device" error in error's chain of causes, if there is one."""
    for _ in range(16):  # a chain can loop; real ones are short
        if error is None:
            return None
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        error = error.__cause__ or error.__context__
    return None


def _disk_full_status(run_dir: Path, error: OSError) -> dict:
    folder = Path(error.filename).parent if error.filename else run_dir
    return {
        "state": "failed",
        "ended_at": runs.now_iso(),
        "phase": "failed",
        "error": f"Training stopped because the disk is full at {folder}; free some space there "
        "and train the run again.",
    }


def _end(run_dir: Path, **changes) -> dict:
    """Write the run's final status. On a full disk it says so, rewriting status.json in place
    when not even a small temporary file fits: a run must never stay "running" after it ended."""
    try:
        return runs.update_status(run_dir, **changes)
    except OSError as error:
        if (full := disk_full_error(error)) is None:
            raise
        path = run_dir / "status.json"
        try:
            old = read_json_object(path) or {}
        except DamagedFile:
            old = {}
        status = old | changes | _disk_full_status(run_dir, full)
        if len(dumps(status)) >= (path.stat().st_size if path.exists() else 0):
            status = {key: status[key] for key in FINAL_KEYS if key in status}  # fits old blocks
        with contextlib.suppress(OSError):
            overwrite_json_in_place(path, status)
        return status


def _train(config: RunConfig, run_dir: Path, cancel_flag: dict, echo: TextIO | None) -> dict:
    """What the run does once it holds its turn; the first import of TensorFlow is here."""
    from engine.devices import quiet_tensorflow_start

    # A no-op where `python -m engine train` started TensorFlow already (a cluster's worker must).
    quiet_tensorflow_start(multi_worker=bool(os.environ.get("TF_CONFIG")))
    from engine.fit_run import fit_run

    return fit_run(config, run_dir, cancel_flag, echo)


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.training RUN_DIR`: train a run that engine.runs.launch_run created."""
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m engine.training RUN_DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    try:
        status = train_run(Path(arguments[0]), echo=sys.stderr)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if status.get("error"):
        print(f"error: {status['error']}", file=sys.stderr)
    print(f"{arguments[0]}: {status.get('state')}", flush=True)
    return 0 if status.get("state") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
