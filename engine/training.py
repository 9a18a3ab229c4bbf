"""The training process: one run from config to saved models, reporting through its run directory.

`train_run(run_dir)` is what `python -m engine train` runs in its own process. It waits its turn
behind other runs (a lock file in the runs folder), streams history and status, saves the best
and last models, honours cancel requests at the next batch, and evaluates the best model at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import time
import traceback
from pathlib import Path

import keras
import numpy as np

from engine import runs
from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import append_jsonl

STATUS_INTERVAL_SECONDS = 1.0
CANCEL_CHECK_SECONDS = 0.25
NICENESS = 5


class _Cancelled(Exception):
    pass


def train_run(run_dir: Path) -> dict:
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
        result = _train(config, run_dir, cancel_flag)
        state = "cancelled" if result.get("cancelled") else "completed"
        if state == "completed":
            runs.update_status(run_dir, phase="evaluating")
            from engine.evaluation import evaluate_run

            evaluate_run(run_dir)
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


def _train(config: RunConfig, run_dir: Path, cancel_flag: dict) -> dict:
    from engine import augment, models
    from engine.data import load_dataset
    from engine.devices import choose_strategy

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
    keras.utils.set_random_seed(config.train.seed)

    dataset = load_dataset(config.data)
    last = [0.0]

    def decode_progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > STATUS_INTERVAL_SECONDS or done == total:
            last[0] = time.monotonic()
            runs.update_status(
                run_dir, phase=f"decoding images {done}/{total}", decoded=done, to_decode=total
            )
        if cancel_flag["set"]:
            raise _Cancelled()

    dataset.prepare(progress=decode_progress)
    from engine.jsonio import write_json

    write_json(run_dir / "load_report.json", dataset.report())
    train_config = config.train
    one_hot = True  # categorical cross-entropy takes label smoothing; labels are one-hot throughout
    train_data = dataset.pipeline(
        "train", train_config.batch_size, shuffle=True, seed=train_config.seed, one_hot=one_hot
    )
    layers = augment.build_augmentation(config.augment, dataset.image_size, seed=train_config.seed)
    if layers is not None:
        train_data = augment.apply_to_dataset(train_data, layers)
    validation_split = "validation" if len(dataset.indices("validation")) else "test"
    validation_data = dataset.pipeline(
        validation_split, max(train_config.batch_size, 64), one_hot=one_hot
    )
    train_count = len(dataset.indices("train"))
    steps_per_epoch = math.ceil(train_count / train_config.batch_size)

    two_phase = models.is_transfer(config.model.name) and config.model.mode == "two_phase"
    head_epochs = (config.model.head_epochs or max(1, train_config.epochs // 2)) if two_phase else 0
    with strategy.scope():
        model = models.build_model(config.model, dataset.image_size, dataset.num_classes)
        learning_rate = train_config.learning_rate
        if models.is_transfer(config.model.name) and config.model.mode == "fine_tuning":
            learning_rate = models.fine_tune_learning_rate(config.model, learning_rate)
        _compile(model, train_config, learning_rate, steps_per_epoch * train_config.epochs)
    parameters = models.count_parameters(model)
    runs.update_status(
        run_dir,
        phase="training",
        epochs=train_config.epochs,
        steps_per_epoch=steps_per_epoch,
        train_images=train_count,
        parameters=parameters,
        validation_split=validation_split,
    )

    recorder = RunRecorder(
        run_dir,
        train_config.epochs,
        steps_per_epoch,
        train_count,
        cancel_flag,
        train_config.history_every_steps,
    )
    callbacks = [
        recorder,
        keras.callbacks.TensorBoard(
            log_dir=str(run_dir / "tensorboard"), write_graph=False, profile_batch=0
        ),
    ]
    if train_config.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=train_config.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    if train_config.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=2, min_lr=1e-6
            )
        )
    class_weight = _class_weights(dataset) if train_config.class_weights else None

    fit_args = dict(
        validation_data=validation_data,
        callbacks=callbacks,
        class_weight=class_weight,
        verbose=0,
        shuffle=False,  # the pipeline shuffles; Keras would only warn
    )
    try:
        model.fit(train_data, epochs=head_epochs or train_config.epochs, **fit_args)
        if two_phase and not model.stop_training and head_epochs < train_config.epochs:
            with strategy.scope():
                models.unfreeze_for_fine_tuning(model, config.model)
                _compile(
                    model,
                    train_config,
                    models.fine_tune_learning_rate(config.model, train_config.learning_rate),
                    steps_per_epoch * (train_config.epochs - head_epochs),
                )
            runs.update_status(
                run_dir, phase="fine-tuning", parameters=models.count_parameters(model)
            )
            model.fit(train_data, initial_epoch=head_epochs, epochs=train_config.epochs, **fit_args)
    except _Cancelled:
        # Raised from the batch callback: leaving fit() at once skips the partial epoch's
        # validation and saving, so a cancel ends the process within a couple of seconds.
        recorder.cancelled = True
    if not (run_dir / "best.keras").exists():
        recorder.save(model, "best.keras")
    return {
        "cancelled": recorder.cancelled,
        "best_epoch": recorder.best_epoch,
        "best_val_loss": recorder.best_val_loss,
        "epochs_done": recorder.epochs_done,
        "train_seconds": round(time.monotonic() - recorder.started, 2),
        "images_per_second": recorder.mean_images_per_second(),
        "eta_seconds": 0,
    }


def _compile(model, train_config, learning_rate: float, total_steps: int) -> None:
    from engine.models import LOSS_FROM_LOGITS

    if train_config.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(total_steps, 1)
        )
    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    if train_config.optimizer not in optimizers:
        raise UserError(
            f"Unknown optimizer '{train_config.optimizer}'; use one of {sorted(optimizers)}."
        )
    extra = {"momentum": 0.9} if train_config.optimizer == "sgd" else {}
    model.compile(
        optimizer=optimizers[train_config.optimizer](learning_rate=learning_rate, **extra),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=LOSS_FROM_LOGITS, label_smoothing=train_config.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        steps_per_execution=train_config.steps_per_execution,
    )


def _class_weights(dataset) -> dict[int, float]:
    """Inverse-frequency weights, so each class counts as much as the others in the loss."""
    tally = np.bincount(dataset.labels[dataset.indices("train")], minlength=dataset.num_classes)
    total = tally.sum()
    return {i: float(total / (dataset.num_classes * max(n, 1))) for i, n in enumerate(tally)}


class RunRecorder(keras.callbacks.Callback):
    """Writes history and status, saves best and last models, and stops on a cancel request."""

    def __init__(
        self,
        run_dir: Path,
        epochs: int,
        steps_per_epoch: int,
        train_images: int,
        cancel_flag: dict,
        every_steps: int = 0,
    ):
        super().__init__()
        self.run_dir, self.epochs, self.steps_per_epoch = Path(run_dir), epochs, steps_per_epoch
        self.train_images, self.cancel_flag = train_images, cancel_flag
        self.every_steps = every_steps or max(1, steps_per_epoch // 10)
        self.cancelled = False
        self.best_val_loss, self.best_epoch, self.epochs_done = math.inf, 0, 0
        self.started = time.monotonic()
        self.epoch_speeds: list[float] = []
        self._last_status = self._last_cancel_check = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch
        self.epoch_started = time.monotonic()
        self.train_seconds = 0.0
        self._last_logged_step = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        step = batch + 1  # with steps_per_execution > 1 Keras reports every few steps only
        self.train_seconds = (
            now - self.epoch_started
        )  # at the epoch's last batch: its training time
        if step - self._last_logged_step >= self.every_steps and step < self.steps_per_epoch:
            self._last_logged_step = step
            append_jsonl(
                self.run_dir / "history.jsonl",
                {
                    "epoch": self._epoch + 1,
                    "step": step,
                    "global_step": self._epoch * self.steps_per_epoch + step,
                    **_floats(logs, ("loss", "accuracy")),
                    "time": round(now - self.started, 3),
                },
            )
        if now - self._last_status > STATUS_INTERVAL_SECONDS:
            self._last_status = now
            self._write_progress(step, now)
        if now - self._last_cancel_check > CANCEL_CHECK_SECONDS:
            self._last_cancel_check = now
            if self.cancel_flag["set"] or runs.cancel_requested(self.run_dir):
                self.cancelled = True
                raise _Cancelled()

    @property
    def _epoch(self) -> int:
        return getattr(self, "current_epoch", 0)

    def _write_progress(self, step: int, now: float) -> None:
        done = self._epoch * self.steps_per_epoch + step
        total = self.epochs * self.steps_per_epoch
        elapsed = now - self.started
        eta = elapsed / max(done, 1) * (total - done)
        runs.update_status(
            self.run_dir,
            epoch=self._epoch + 1,
            step=step,
            global_step=done,
            total_steps=total,
            eta_seconds=round(eta, 1),
            elapsed_seconds=round(elapsed, 1),
            images_per_second=self.mean_images_per_second(),
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.monotonic()
        train_seconds = self.train_seconds or (now - self.epoch_started)
        speed = self.train_images / max(train_seconds, 1e-9)
        self.epoch_speeds.append(speed)
        learning_rate = float(np.asarray(self.model.optimizer.learning_rate))
        row = {
            "epoch": epoch + 1,
            **_floats(logs, ("loss", "accuracy", "val_loss", "val_accuracy")),
            "learning_rate": learning_rate,
            "epoch_seconds": round(now - self.epoch_started, 3),
            "train_seconds": round(train_seconds, 3),
            "images_per_second": round(speed, 1),
            "time": round(now - self.started, 3),
        }
        append_jsonl(self.run_dir / "history.jsonl", row)
        self.epochs_done = epoch + 1
        self.save(self.model, "last.keras")
        val_loss = logs.get("val_loss")
        if val_loss is not None and float(val_loss) < self.best_val_loss:
            self.best_val_loss, self.best_epoch = float(val_loss), epoch + 1
            self.save(self.model, "best.keras")
        self._write_progress(self.steps_per_epoch, now)
        runs.update_status(
            self.run_dir, best_epoch=self.best_epoch, best_val_loss=self.best_val_loss
        )

    def save(self, model, name: str) -> None:
        """Save a model atomically: a temporary .keras file renamed over the old one."""
        temporary = self.run_dir / f".{name}.tmp.keras"
        model.save(temporary)
        os.replace(temporary, self.run_dir / name)

    def mean_images_per_second(self) -> float:
        return round(float(np.median(self.epoch_speeds)), 1) if self.epoch_speeds else 0.0


def _floats(logs, keys) -> dict:
    logs = logs or {}
    return {
        key: round(float(logs[key]), 6) for key in keys if key in logs and logs[key] is not None
    }
