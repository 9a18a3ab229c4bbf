"""Small Keras callbacks the trainer is given: history, status, checkpoints, cancel, EMA, terminal.

Each does one thing, so the trainer only fits and the caller (the worker process, lr-find, a
benchmark) decides what gets written where.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from engine import runs
from engine.continuation import sidecar_name
from engine.jsonio import append_jsonl, write_json
from engine.optim import current_learning_rate
from engine.progress import Clock, TerminalProgress, format_seconds  # noqa: F401  re-exported

STATUS_INTERVAL_SECONDS = 1.0
CANCEL_CHECK_SECONDS = 0.25
LAST_SAVE_SECONDS = 30.0


class Cancelled(Exception):
    """Raised from a batch callback to leave fit() at once."""


def floats(logs: dict | None, keys: tuple[str, ...]) -> dict:
    logs = logs or {}
    return {
        key: round(float(logs[key]), 6) for key in keys if key in logs and logs[key] is not None
    }


class CancelOnRequest(keras.callbacks.Callback):
    """Raises Cancelled at the next batch once should_cancel() says so (checked 4 times a second)."""

    def __init__(self, should_cancel: Callable[[], bool]):
        super().__init__()
        self.should_cancel = should_cancel
        self._last_check = 0.0
        self.cancelled = False

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last_check > CANCEL_CHECK_SECONDS:
            self._last_check = now
            if self.should_cancel():
                self.cancelled = True
                raise Cancelled()


class EmaValidation(keras.callbacks.Callback):
    """Validate, checkpoint and keep the optimizer's moving average of the weights.

    With `use_ema`, Keras keeps the average but only copies it into the model when fit() ends.
    This swaps it in before each validation, so val_loss, the best checkpoint and the final model
    all describe the same (averaged) weights, and swaps the raw weights back before the next
    epoch trains.
    """

    def __init__(self):
        super().__init__()
        self._raw: list[np.ndarray] | None = None

    def on_test_begin(self, logs=None):
        optimizer = self.model.optimizer
        if not getattr(optimizer, "use_ema", False) or self._raw is not None:
            return
        if int(optimizer.iterations.numpy()) == 0:
            return
        self._raw = [variable.numpy() for variable in self.model.trainable_variables]
        optimizer.finalize_variable_values(self.model.trainable_variables)

    def on_epoch_begin(self, epoch, logs=None):
        self.restore_raw()

    def restore_raw(self) -> None:
        if self._raw is not None:
            for variable, value in zip(self.model.trainable_variables, self._raw, strict=True):
                variable.assign(value)
            self._raw = None

    def on_train_end(self, logs=None):
        self._raw = None  # fit() leaves the averaged weights in the model: keep them


def validation_score(logs: dict | None) -> tuple[float, float] | None:
    """How good an epoch is on validation: (val_accuracy, -val_loss), higher is better.

    Accuracy first: with label smoothing and augmentation, val_loss keeps favouring early,
    under-confident epochs long after accuracy has moved on, and on a small validation set that
    picks a model near chance. The loss only breaks ties.
    """
    logs = logs or {}
    if logs.get("val_accuracy") is None or logs.get("val_loss") is None:
        return None
    loss = float(logs["val_loss"])
    return float(logs["val_accuracy"]), -loss if math.isfinite(loss) else -math.inf


class BestWeights(keras.callbacks.Callback):
    """Remembers the weights of the best epoch on validation (validation_score), in memory."""

    def __init__(self):
        super().__init__()
        self.score: tuple[float, float] | None = None
        self.best_epoch = 0
        self.best_val_loss: float | None = None
        self.weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch, logs=None):
        score = validation_score(logs)
        if score is not None and (self.score is None or score > self.score):
            self.score, self.best_epoch = score, epoch + 1
            self.best_val_loss = float(logs["val_loss"])
            self.weights = self.model.get_weights()

    def restore(self, model: keras.Model) -> bool:
        if self.weights is None:
            return False
        model.set_weights(self.weights)
        return True


class HistoryWriter(keras.callbacks.Callback):
    """Appends epoch rows (and about 10 in-epoch rows per epoch) to run_dir/history.jsonl."""

    def __init__(self, run_dir: Path, clock: Clock, every_steps: int = 0):
        super().__init__()
        self.path = Path(run_dir) / "history.jsonl"
        self.clock = clock
        self.every_steps = every_steps or max(1, clock.steps_per_epoch // 10)
        self._last_logged_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._last_logged_step = 0

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step - self._last_logged_step >= self.every_steps and step < self.clock.steps_per_epoch:
            self._last_logged_step = step
            append_jsonl(
                self.path,
                {
                    "epoch": self.clock.epoch + 1,
                    "step": step,
                    "global_step": self.clock.epoch * self.clock.steps_per_epoch + step,
                    **floats(logs, ("loss", "accuracy")),
                    "time": round(time.monotonic() - self.clock.started, 3),
                },
            )

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        append_jsonl(
            self.path,
            {
                "epoch": epoch + 1,
                **floats(logs, ("loss", "accuracy", "val_loss", "val_accuracy")),
                "learning_rate": current_learning_rate(self.model.optimizer),
                "epoch_seconds": round(now - self.clock.epoch_started, 3),
                "train_seconds": round(self.clock.train_seconds, 3),
                "images_per_second": round(self.clock.epoch_speeds[-1], 1)
                if self.clock.epoch_speeds
                else 0.0,
                "time": round(now - self.clock.started, 3),
            },
        )


class StatusWriter(keras.callbacks.Callback):
    """Writes progress (epoch, step, ETA, images/s) into status.json about once a second."""

    def __init__(self, run_dir: Path, clock: Clock):
        super().__init__()
        self.run_dir, self.clock = Path(run_dir), clock
        self._last = 0.0

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last > STATUS_INTERVAL_SECONDS:
            self._last = now
            self.write()

    def on_epoch_end(self, epoch, logs=None):
        self.write()

    def write(self) -> None:
        clock = self.clock
        done = clock.epoch * clock.steps_per_epoch + clock.step
        # No figure rather than a wrong one: the ETA waits for one whole epoch's speed (the first
        # steps include graph tracing), images/s for its first measurement.
        speed = clock.images_per_second_now()
        eta = clock.eta_seconds(clock.epochs - clock.epoch - 1) if clock.epoch_speeds else None
        runs.update_status(
            self.run_dir,
            epoch=clock.epoch + 1,
            step=clock.step,
            global_step=done,
            total_steps=clock.epochs * clock.steps_per_epoch,
            eta_seconds=round(eta, 1) if eta is not None else None,
            elapsed_seconds=round(time.monotonic() - clock.started, 1),
            images_per_second=round(speed, 1) if speed > 0 else None,
        )


class Checkpoints(keras.callbacks.Callback):
    """Saves last.keras and best.keras, each with the epoch it holds in a sidecar (last.json).

    last.keras is saved at the first and the final epoch and at most every LAST_SAVE_SECONDS in
    between; best.keras whenever the validation score improves. A continued run passes the rows
    of its earlier epochs as `earlier`, so best.keras is replaced only by a better epoch.
    """

    def __init__(self, run_dir: Path, select_best: bool, earlier: list[dict] | None = None):
        super().__init__()
        self.run_dir, self.select_best = Path(run_dir), select_best
        self.score: tuple[float, float] | None = None
        self.best_epoch, self.epochs_done = 0, 0
        self.best_val_loss: float | None = None
        self._last_saved = -math.inf
        for row in (earlier or []) if select_best else []:
            score = validation_score(row)
            if score is not None and (self.score is None or score > self.score):
                self.score, self.best_epoch = score, int(row["epoch"])
                self.best_val_loss = float(row["val_loss"])

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done = epoch + 1
        # On a small dataset saving takes as long as an epoch: last.keras (what a cancelled run
        # keeps) is refreshed at most every LAST_SAVE_SECONDS, and the worker saves the end.
        now = time.monotonic()
        if now - self._last_saved >= LAST_SAVE_SECONDS or epoch + 1 == self.params.get("epochs"):
            self.save(self.model, "last.keras", epoch + 1)
            self._last_saved = now
        score = validation_score(logs) if self.select_best else None
        if score is not None and (self.score is None or score > self.score):
            self.score, self.best_epoch = score, epoch + 1
            self.best_val_loss = float(logs["val_loss"])
            self.save(self.model, "best.keras", epoch + 1)
        update: dict = {"epochs_done": self.epochs_done}
        if self.best_epoch:
            update |= {
                "best_epoch": self.best_epoch,
                "best_val_accuracy": self.score[0],
                "best_val_loss": self.best_val_loss,
            }
        runs.update_status(self.run_dir, **update)

    def save(self, model: keras.Model, name: str, epoch: int | None = None) -> None:
        """Save a model atomically (a temporary .keras file renamed over the old one), then the
        epoch it holds: a run interrupted later continues from that epoch (engine.continuation)."""
        temporary = self.run_dir / f".{name}.tmp.keras"
        try:
            model.save(temporary)
            os.replace(temporary, self.run_dir / name)
        except BaseException:  # a full disk, a cancel: no half-written model is left behind
            temporary.unlink(missing_ok=True)
            raise
        epoch = self.epochs_done if epoch is None else int(epoch)
        if epoch >= 1:
            write_json(self.run_dir / sidecar_name(name), {"epoch": epoch})
