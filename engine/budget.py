"""Fitting epochs to a time budget: a short timed fit on this machine, then simple arithmetic.

A run with train.epochs = 0 asks for as many epochs as fit train.time_budget_minutes here; the
worker calls fit_epochs_to_budget before training and writes the answer into config.json.
"""

from __future__ import annotations

import time

import keras

from engine.config import RunConfig
from engine.errors import UserError

MAX_BUDGET_EPOCHS = 200  # epochs=0 never fits more epochs than this into the time budget
MIN_BUDGET_EPOCHS = 3
CALIBRATION_STEPS = 8  # timed training steps, after 2 untimed ones that trace the graph


def fit_epochs_to_budget(config: RunConfig, dataset, strategy) -> tuple[int, dict]:
    """The number of epochs that fit train.time_budget_minutes, from a short timed fit here.

    A throwaway copy of the model trains CALIBRATION_STEPS steps on the real pipeline; validation
    is counted at a third of a training step per image (forward only).
    """
    from engine.trainer import FINE_TUNE_STEP_COST, Trainer, with_epochs

    probe = Trainer(with_epochs(config, 1), dataset, strategy)
    model = probe.build_model()
    timer = StepTimer()
    steps = min(probe.steps_per_epoch, CALIBRATION_STEPS) + 2
    model.fit(probe.train_data().repeat().take(steps), callbacks=[timer], verbose=0, shuffle=False)
    seconds_per_step = timer.seconds_per_step()
    del model
    keras.backend.clear_session()
    batch = config.train.batch_size
    train_step_image = seconds_per_step / batch
    validation_images = len(dataset.indices("validation"))
    epoch_seconds = (
        probe.steps_per_epoch * seconds_per_step + validation_images * train_step_image / 3
    )
    budget = config.train.time_budget_minutes * 60
    if probe.two_phase:
        # Half the epochs at the frozen speed, half at the fine-tuning speed.
        epoch_seconds *= (1 + FINE_TUNE_STEP_COST) / 2
    epochs = int(budget // max(epoch_seconds, 1e-9))
    epochs = max(MIN_BUDGET_EPOCHS, min(MAX_BUDGET_EPOCHS, epochs))
    estimate = {
        "images_per_second": round(batch / seconds_per_step, 1),
        "epoch_seconds": round(epoch_seconds, 2),
        "budget_seconds": budget,
        "epochs": epochs,
    }
    return epochs, estimate


class StepTimer(keras.callbacks.Callback):
    """Times training steps after the first two (graph tracing)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.monotonic())

    def seconds_per_step(self) -> float:
        if len(self.times) < 3:
            raise UserError("The speed measurement ran too few steps; set train.epochs instead.")
        return (self.times[-1] - self.times[1]) / (len(self.times) - 2)
