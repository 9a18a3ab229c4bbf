"""What a run does once its turn has come: devices, data, the time budget, the Trainer and its callbacks.

engine.training (the worker) imports this module only while it holds the training lock: importing
it imports TensorFlow and Keras.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

import keras

from engine import callbacks as cb
from engine import continuation, models, runs
from engine.config import RunConfig
from engine.data import load_dataset
from engine.devices import choose_strategy
from engine.jsonio import read_json_object, write_json
from engine.trainer import Trainer, with_epochs

STATUS_INTERVAL_SECONDS = 1.0


def fit_run(config: RunConfig, run_dir: Path, cancel_flag: dict, echo: TextIO | None) -> dict:
    """Train the run, or continue it when engine.run_admin asked for that (resume.json); the
    result fields of its final status ({"cancelled": True, ...} when cancelled)."""
    resume = continuation.pending_resume(run_dir)
    try:
        return _fit(config, run_dir, cancel_flag, echo, resume)
    except cb.Cancelled:  # while loading or decoding images, before fit() has a model to keep
        start = int(resume["from_epoch"]) if resume else 0
        return {
            "cancelled": True,
            "epochs_done": start,
            "message": continuation.cancelled_early(start),
        }


def _fit(
    config: RunConfig,
    run_dir: Path,
    cancel_flag: dict,
    echo: TextIO | None,
    resume: dict | None,
) -> dict:
    def check_cancel() -> None:
        if cancel_flag["set"] or runs.cancel_requested(run_dir):
            raise cb.Cancelled()

    check_cancel()  # a cancel while TensorFlow was starting
    strategy, device = choose_strategy()
    mixed = config.train.mixed_precision and device["gpus"] > 0
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    runs.update_status(
        run_dir,
        device=device["device"],
        strategy=device["strategy"],
        replicas=device["replicas"],
        workers=device.get("workers", 1),
        mixed_precision=mixed,
        phase="indexing data",
    )
    dataset = load_dataset(config.data, progress=_index_progress(run_dir, echo))
    check_cancel()
    if resume and (manifest := read_json_object(run_dir / "data_manifest.json")) is not None:
        dataset.verify_manifest(manifest)  # the same split members, or a sentence
    dataset.prepare(progress=_decode_progress(run_dir, cancel_flag, echo))
    check_cancel()
    if resume:
        config = with_epochs(config, resume["total_epochs"])  # config.json keeps what was asked
    else:
        write_json(run_dir / "load_report.json", dataset.report())
        manifest = dataset.manifest(progress=_reading_progress(run_dir, cancel_flag, echo))
        write_json(run_dir / "data_manifest.json", manifest)
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
    start, earlier, continued, phases = 0, [], {}, []
    if resume:
        start = int(resume["from_epoch"])
        phases = continuation.earlier_phases(run_dir, start)
        model = continuation.load_checkpoint(run_dir / resume["checkpoint"], trainer.strategy)
        earlier = continuation.truncate_history(run_dir, start)  # rows after the checkpoint go
        restored = continuation.continue_schedule(
            model, trainer, earlier, config.train.epochs - start
        )
        continued = {"resumed_from_epoch": start, "optimizer_state_restored": restored}
    else:
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
        **continued,
    )
    if echo and not trainer.model_selection:
        print(
            "note: no validation split, so nothing chooses the model: no early stopping, and the "
            "last weights are evaluated",
            file=echo,
            flush=True,
        )
    clock = cb.Clock(trainer.train_count, trainer.steps_per_epoch, config.train.epochs)
    if earlier and isinstance(earlier[-1].get("time"), (int, float)):
        clock.started -= earlier[-1]["time"]  # history's time axis goes on where it stopped
    checkpoints = cb.Checkpoints(run_dir, select_best=trainer.model_selection, earlier=earlier)
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
    result = trainer.fit(callbacks, model, initial_epoch=start)
    if not result.cancelled:
        # fit() ends with the averaged (EMA) weights: the final model is what was validated last.
        checkpoints.save(result.model, "last.keras", result.epochs_done)
    # A continued run's best epoch may be an earlier one: the checkpoints know them all.
    best = checkpoints if resume and result.model_selection else result
    ended = {
        "cancelled": result.cancelled,
        "best_epoch": best.best_epoch,
        "best_val_loss": best.best_val_loss,
        "model_selection": result.model_selection,
        "epochs_done": result.epochs_done,
        "phases": phases + result.phases,
        "train_seconds": round(time.monotonic() - clock.started, 2),
        "images_per_second": clock.median_images_per_second() or None,
        "eta_seconds": 0,
    }
    if result.cancelled and result.epochs_done == start:
        ended["message"] = continuation.cancelled_early(start)
    return ended


class _PhaseStatus(keras.callbacks.Callback):
    """Tells status.json when two-phase training moves on to fine-tuning."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir

    def on_phase(self, name: str, model) -> None:
        runs.update_status(self.run_dir, phase=name, parameters=models.count_parameters(model))


def _index_progress(run_dir: Path, echo: TextIO | None):
    """Status (and, for large folders, a terminal line) while the files' headers are read."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > STATUS_INTERVAL_SECONDS or done == total:
            last[0] = now
            runs.update_status(run_dir, phase=f"reading file headers {done}/{total}")
            if echo and total >= 5000:
                print(f"reading file headers {done}/{total}", file=echo, flush=True)

    return progress


def _reading_progress(run_dir: Path, cancel_flag: dict, echo: TextIO | None):
    """Status (and, after 5 s, terminal lines) while a new dataset's bytes are read for its
    manifest's content digest (engine.data.manifest), once per data fingerprint."""
    last, started = [0.0], time.monotonic()

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > STATUS_INTERVAL_SECONDS or done == total:
            last[0] = now
            phase = f"reading the data's bytes for its manifest {done}/{total}"
            runs.update_status(run_dir, phase=phase)
            if echo and now - started > 5:
                print(phase, file=echo, flush=True)
        if cancel_flag["set"]:
            raise cb.Cancelled()

    return progress


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
                line = f"decoding images {done}/{total}  {rate:.0f}/s  ETA {cb.format_seconds(eta)}"
                print(
                    ("\r" + line) if tty else line,
                    end="\n" if done == total or not tty else "",
                    file=echo,
                    flush=True,
                )
            if done == total:
                last[0] = -1.0
        if cancel_flag["set"]:
            raise cb.Cancelled()

    return progress
