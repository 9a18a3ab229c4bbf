"""The training worker: the process concerns of one run, around engine.trainer.Trainer.

`train_run(run_dir)` is what `python -m engine train` runs in its own process. It lowers its
priority, turns SIGTERM/SIGINT into a cancel, waits its turn behind other runs (a lock file in the
runs folder), loads the data, fits epochs=0 to the time budget, hands the Trainer the callbacks
that write history, status and checkpoints into the run folder, and evaluates at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
import traceback
from pathlib import Path
from typing import TextIO

import keras

from engine import runs
from engine.callbacks import Cancelled as _Cancelled
from engine.callbacks import format_seconds
from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import write_json

STATUS_INTERVAL_SECONDS = 1.0
NICENESS = 5


def train_run(run_dir: Path, echo: TextIO | None = None) -> dict:
    """Train the run in run_dir in this process; returns its final status."""
    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    # Training takes every core it can; a slightly lower priority keeps the dashboard and the
    # machine responsive while costing the run almost nothing.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    runs.update_status(
        run_dir, pid=os.getpid(), state="queued", phase="waiting for other runs to finish"
    )
    cancel_flag = {"set": False}

    def on_signal(signum, frame):
        cancel_flag["set"] = True
        (run_dir / runs.CANCEL_FILE).touch()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lock = _wait_for_turn(run_dir, cancel_flag)
    try:
        if lock is None:
            raise _Cancelled()
        runs.update_status(run_dir, state="running", started_at=runs.now_iso(), phase="starting")
        result = _train(config, run_dir, cancel_flag, echo)
        state = "cancelled" if result.get("cancelled") else "completed"
        if state == "completed":
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
        return runs.update_status(
            run_dir, state=state, ended_at=runs.now_iso(), phase=state, **result
        )
    except _Cancelled:
        return runs.update_status(
            run_dir, state="cancelled", ended_at=runs.now_iso(), phase="cancelled"
        )
    except UserError as error:
        return runs.update_status(
            run_dir, state="failed", ended_at=runs.now_iso(), error=str(error)
        )
    except Exception as error:  # anything else is a bug: keep its traceback beside the run
        (run_dir / "error.log").write_text(traceback.format_exc())
        message = f"{type(error).__name__}: {error}".strip()
        return runs.update_status(
            run_dir,
            state="failed",
            ended_at=runs.now_iso(),
            error=f"Training stopped with an internal error ({message[:300]}); see error.log in the run folder.",
        )
    finally:
        if lock is not None:
            lock.close()


def _wait_for_turn(run_dir: Path, cancel_flag: dict):
    """Hold the runs folder's training lock, so runs train one after another; None if cancelled."""
    handle = open(run_dir.parent / ".training.lock", "w")  # noqa: SIM115  held until the run ends
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if cancel_flag["set"] or runs.cancel_requested(run_dir):
                handle.close()
                return None
            time.sleep(0.5)


def _train(config: RunConfig, run_dir: Path, cancel_flag: dict, echo: TextIO | None) -> dict:
    from engine import callbacks as cb
    from engine import models
    from engine.data import load_dataset
    from engine.devices import choose_strategy
    from engine.trainer import Trainer, with_epochs

    strategy, device = choose_strategy()
    mixed = config.train.mixed_precision and device["gpus"] > 0
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    runs.update_status(
        run_dir,
        device=device["device"],
        strategy=device["strategy"],
        replicas=device["replicas"],
        mixed_precision=mixed,
        phase="indexing data",
    )
    dataset = load_dataset(config.data)
    dataset.prepare(progress=_decode_progress(run_dir, cancel_flag, echo))
    write_json(run_dir / "load_report.json", dataset.report())
    write_json(run_dir / "data_manifest.json", dataset.manifest())
    if config.train.epochs == 0:
        runs.update_status(run_dir, phase="measuring speed to fit the time budget")
        from engine.budget import fit_epochs_to_budget

        epochs, estimate = fit_epochs_to_budget(config, dataset, strategy)
        config = with_epochs(config, epochs)
        write_json(run_dir / "config.json", config.to_dict())  # every resolved value, for a rerun
        runs.update_status(run_dir, budget_estimate=estimate)
        if echo:
            print(
                f"{epochs} epochs fit the {config.train.time_budget_minutes:g}-minute budget "
                f"(measured {estimate['images_per_second']:.0f} images/s)",
                file=echo,
                flush=True,
            )
    notes = models.transfer_notes(config.model) if models.is_transfer(config.model.name) else []
    for note in notes:
        if echo:
            print(f"note: {note}", file=echo, flush=True)

    trainer = Trainer(config, dataset, strategy)
    model = trainer.build_model()
    runs.update_status(
        run_dir,
        phase="training",
        epochs=config.train.epochs,
        steps_per_epoch=trainer.steps_per_epoch,
        train_images=trainer.train_count,
        parameters=models.count_parameters(model),
        validation_split=trainer.validation_split,
        model_selection=trainer.model_selection,
        notes=notes,
    )
    if echo and not trainer.model_selection:
        print(
            "note: no validation split, so nothing chooses the model: no early stopping, and the "
            "last weights are evaluated",
            file=echo,
            flush=True,
        )
    clock = cb.Clock(trainer.train_count, trainer.steps_per_epoch, config.train.epochs)
    checkpoints = cb.Checkpoints(run_dir, select_best=trainer.model_selection)
    callbacks = [
        clock,
        cb.CancelOnRequest(lambda: cancel_flag["set"] or runs.cancel_requested(run_dir)),
        cb.HistoryWriter(run_dir, clock, config.train.history_every_steps),
        checkpoints,
        cb.StatusWriter(run_dir, clock),
        keras.callbacks.TensorBoard(
            log_dir=str(run_dir / "tensorboard"), write_graph=False, profile_batch=0
        ),
        _PhaseStatus(run_dir),
    ]
    if echo:
        callbacks.append(cb.TerminalProgress(clock, echo))
    result = trainer.fit(callbacks, model)
    if not result.cancelled:
        # fit() ends with the averaged (EMA) weights: the final model is what was validated last.
        checkpoints.save(result.model, "last.keras")
    if not (run_dir / "best.keras").exists() and not (run_dir / "last.keras").exists():
        checkpoints.save(result.model, "last.keras")
    return {
        "cancelled": result.cancelled,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "model_selection": result.model_selection,
        "epochs_done": result.epochs_done,
        "phases": result.phases,
        "train_seconds": round(time.monotonic() - clock.started, 2),
        "images_per_second": clock.median_images_per_second(),
        "eta_seconds": 0,
    }


class _PhaseStatus(keras.callbacks.Callback):
    """Tells status.json when two-phase training moves on to fine-tuning."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir

    def on_phase(self, name: str, model) -> None:
        from engine.models import count_parameters

        runs.update_status(self.run_dir, phase=name, parameters=count_parameters(model))


def _decode_progress(run_dir: Path, cancel_flag: dict, echo: TextIO | None):
    last = [0.0, 0]  # when status was last written, and how many times
    started = time.monotonic()
    tty = bool(echo) and echo.isatty()

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total and last[0] < 0:
            return  # the end was reported already (prepare() reports it again when it opens)
        if now - last[0] > STATUS_INTERVAL_SECONDS or done == total:
            last[0] = now
            last[1] += 1
            runs.update_status(
                run_dir, phase=f"decoding images {done}/{total}", decoded=done, to_decode=total
            )
            if echo and done == total and now - started < 0.5 and last[1] == 1:
                print(f"{total} images decoded already (the cache)", file=echo, flush=True)
            elif echo and (tty or done == total or now - started > 5):
                rate = done / max(now - started, 1e-9)
                eta = (total - done) / rate if rate else 0
                line = f"decoding images {done}/{total}  {rate:.0f}/s  ETA {format_seconds(eta)}"
                print(
                    ("\r" + line) if tty else line,
                    end="\n" if done == total or not tty else "",
                    file=echo,
                    flush=True,
                )
            if done == total:
                last[0] = -1.0
        if cancel_flag["set"]:
            raise _Cancelled()

    return progress
