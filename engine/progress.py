"""Training progress: a clock that counts images per second and ETA, and the terminal's epoch line.

The Clock is shared by every callback that reports speed (history, status, terminal), so they agree.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import keras
import numpy as np


class Clock(keras.callbacks.Callback):
    """Times each epoch's training batches (validation excluded) and counts images per second.

    Shared by the callbacks that report speed, so they all agree. With steps_per_execution > 1
    Keras reports every few steps only; the time at the last reported batch is what counts.
    """

    def __init__(self, train_images: int, steps_per_epoch: int, epochs: int):
        super().__init__()
        self.train_images, self.steps_per_epoch, self.epochs = train_images, steps_per_epoch, epochs
        self.started = time.monotonic()
        self.epoch = 0
        self.step = 0
        self.epoch_started = self.started
        self.train_seconds = 0.0
        self.epoch_speeds: list[float] = []
        self.first_step_seconds: float | None = None  # graph tracing: excluded from speed and ETA

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.step = epoch, 0
        self.epoch_started = time.monotonic()
        self.train_seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if self.first_step_seconds is None:
            self.first_step_seconds = now - self.epoch_started
            self._steady_from = (now, batch + 1)
        self.step = batch + 1
        self.train_seconds = now - self.epoch_started

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_speeds.append(self.images_per_second_now())

    def images_per_second_now(self) -> float:
        """Images per second of the current epoch so far, the first (tracing) step left out."""
        since, first_steps = getattr(self, "_steady_from", (None, 0))
        if self.epoch == 0 and since is not None and self.step > first_steps:
            steps = self.step - first_steps
            seconds = (
                time.monotonic() - since
                if self.step < self.steps_per_epoch
                else (self.epoch_started + self.train_seconds - since)
            )
            return self.train_images / self.steps_per_epoch * steps / max(seconds, 1e-9)
        if self.step and self.train_seconds:
            return self.train_images / self.steps_per_epoch * self.step / self.train_seconds
        return self.epoch_speeds[-1] if self.epoch_speeds else 0.0

    def median_images_per_second(self) -> float:
        return round(float(np.median(self.epoch_speeds)), 1) if self.epoch_speeds else 0.0

    def eta_seconds(self, epochs_left_after_this: int) -> float:
        """Seconds until the last epoch ends, from the steady speed (tracing left out)."""
        speed = self.images_per_second_now()
        if not speed:
            return 0.0
        per_step = self.train_images / self.steps_per_epoch / speed
        steps_left = (
            self.steps_per_epoch - self.step + epochs_left_after_this * self.steps_per_epoch
        )
        return steps_left * per_step


class TerminalProgress(keras.callbacks.Callback):
    """One line per epoch on stderr: epoch N/M, losses, accuracies, images/s and ETA."""

    def __init__(self, clock: Clock, stream: TextIO | None = None, label: str = ""):
        super().__init__()
        self.clock, self.stream, self.label = clock, stream or sys.stderr, label

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{self.label}epoch {epoch + 1}/{self.clock.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if logs.get(key) is not None:
                parts.append(f"{key} {float(logs[key]):.4f}")
        speed = self.clock.epoch_speeds[-1] if self.clock.epoch_speeds else 0.0
        parts.append(f"{speed:.0f} images/s")
        parts.append(f"ETA {format_seconds(self.clock.eta_seconds(self.clock.epochs - epoch - 1))}")
        print("  ".join(parts), file=self.stream, flush=True)


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
